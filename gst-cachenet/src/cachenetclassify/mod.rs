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

/// `backend` property values (cachenet_core's `BackendChoice`).
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstCacheNetBackend")]
pub enum Backend {
    #[enum_value(
        name = "Auto: the engine's own plan where it takes the graph, else tract",
        nick = "auto"
    )]
    Auto = 0,
    #[enum_value(
        name = "Direct: the engine's own plan only (a graph it refuses is an error)",
        nick = "direct"
    )]
    Direct = 1,
    #[enum_value(name = "Tract: tract's optimised plan", nick = "tract")]
    Tract = 2,
    #[enum_value(
        name = "onnxruntime: an onnxruntime session (built with the onnxruntime feature; the library found at run time)",
        nick = "onnxruntime"
    )]
    OnnxRuntime = 3,
}

impl From<Backend> for cachenet_core::engine::BackendChoice {
    fn from(b: Backend) -> Self {
        match b {
            Backend::Auto => Self::Auto,
            Backend::Direct => Self::Direct,
            Backend::Tract => Self::Tract,
            Backend::OnnxRuntime => Self::OnnxRuntime,
        }
    }
}

/// `execution-provider` property values (cachenet_core's `Provider`).
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstCacheNetExecutionProvider")]
pub enum ExecutionProvider {
    #[enum_value(name = "CPU", nick = "cpu")]
    Cpu = 0,
    #[enum_value(name = "CUDA (onnxruntime-gpu, JetPack)", nick = "cuda")]
    Cuda = 1,
    #[enum_value(name = "TensorRT (onnxruntime-gpu, JetPack)", nick = "tensorrt")]
    TensorRt = 2,
}

impl From<ExecutionProvider> for cachenet_core::engine::Provider {
    fn from(p: ExecutionProvider) -> Self {
        match p {
            ExecutionProvider::Cpu => Self::Cpu,
            ExecutionProvider::Cuda => Self::Cuda,
            ExecutionProvider::TensorRt => Self::TensorRt,
        }
    }
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
