//! The `cachenetclassify` element.

use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    /// CacheNet classifier: in-place analysis filter attaching per-frame results.
    pub struct CacheNetClassify(ObjectSubclass<imp::CacheNetClassify>)
        @extends gst_base::BaseTransform, gst::Element, gst::Object;
}

/// `mode` property values.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstCacheNetMode")]
pub enum Mode {
    #[enum_value(
        name = "CacheNet: cached submodel, offload on a miss",
        nick = "cachenet"
    )]
    CacheNet = 0,
    #[enum_value(
        name = "Device: the full model on every frame, locally",
        nick = "device"
    )]
    Device = 1,
    #[enum_value(name = "Edge: every frame offloaded to the edge server", nick = "edge")]
    Edge = 2,
    #[enum_value(
        name = "Submodel only: the cached submodel on every frame, never offloaded",
        nick = "submodel-only"
    )]
    SubmodelOnly = 3,
}

/// `offload` property values.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstCacheNetOffload")]
pub enum Offload {
    #[enum_value(
        name = "Sync: the frame waits for the edge (bounded by timeout-ms)",
        nick = "sync"
    )]
    Sync = 0,
    #[enum_value(
        name = "Async: the frame leaves with the local result, the edge answers later",
        nick = "async"
    )]
    Async = 1,
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
