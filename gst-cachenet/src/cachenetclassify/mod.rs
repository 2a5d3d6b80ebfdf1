//! The `cachenetclassify` element.

use gst::glib;
use gst::prelude::*;

mod imp;
mod latency;
mod process;
mod publish;
mod settings;
mod startup;

pub use crate::runtime::{Mode, Offload};

glib::wrapper! {
    /// CacheNet classifier: in-place analysis filter attaching per-frame results.
    pub struct CacheNetClassify(ObjectSubclass<imp::CacheNetClassify>)
        @extends gst_base::BaseTransform, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "cachenetclassify",
        gst::Rank::NONE,
        CacheNetClassify::static_type(),
    )
}

/// `regions` property values.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstCacheNetRegions")]
pub enum Regions {
    #[enum_value(name = "Frame: classify the whole frame", nick = "frame")]
    Frame = 0,
    #[enum_value(
        name = "ROI: classify every region of interest an upstream element attached",
        nick = "roi"
    )]
    Roi = 1,
}
