//! `cachenet-bench`: runs real GStreamer pipelines (`gst-launch-1.0 ... ! cachenetclassify mode=X
//! ! fakesink`) against a real `cachenet-edge` process behind an emulated link, with the device
//! pipeline confined to a fraction of a CPU, and reports the paper's table.

pub mod engines;
pub mod fleet;
pub mod proxy;
pub mod report;
pub mod run;
pub mod scaler;
