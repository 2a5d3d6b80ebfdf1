//! GStreamer plugin `cachenet`: the `cachenetclassify` element classifies video frames with a
//! cached specialised submodel and offloads uncertain frames to a CacheNet edge server.

use gst::glib;

#[cfg(feature = "analytics")]
pub mod analytics;
pub mod audit;
mod cachenetclassify;
pub mod edge;
pub mod frame;
pub mod meta;
pub mod objects;
pub mod outbox;
pub mod remote;
pub mod result;
pub mod runtime;
pub mod secret;
pub mod store;
pub mod worker;

pub use cachenetclassify::CacheNetClassify;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    cachenetclassify::register(plugin)
}

gst::plugin_define!(
    cachenet,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MIT/X11",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_REPOSITORY"),
    env!("BUILD_REL_DATE")
);
