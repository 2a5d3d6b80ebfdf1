//! CacheNet core: everything the device (GStreamer element) and the edge server share.
//!
//! - [`proto`]: the protobuf protocol (generated from `proto/cachenet.proto`).
//! - [`manifest`]: the on-disk model-set format and its validation.
//! - [`selector`]: the polar soft-code maths of the submodel selector (paper eqs 9-13).
//! - [`maths`]: softmax, predictive entropy (nats) and argmax.
//! - [`engine`]: the only module that talks to tract (ONNX inference).
//! - [`modelset`]: a validated model set with its models loaded.
//! - [`cache`]: the LRU cache of submodels held by a device.
//! - [`scaler`]: frames (packed RGB, gray, Y'CbCr 4:2:0) -> u8 HWC pixels at model size,
//!   by area averaging: the device and the edge scale with it alike.
//! - [`preprocess`]: u8 HWC pixels at model size -> normalised NCHW f32 tensor.

pub mod cache;
pub mod cpu;
pub mod engine;
pub mod manifest;
pub mod maths;
pub mod modelset;
pub mod preprocess;
pub mod scaler;
pub mod selector;

mod error;
pub use error::{CoreError, Result};

/// Protocol messages (package `cachenet.v1`).
pub mod proto {
    #![allow(clippy::doc_markdown, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/cachenet.v1.rs"));

    /// Current protocol version carried in `InferRequest.api_version`.
    pub const API_VERSION: u32 = 1;
    /// Content type of every protobuf body.
    pub const CONTENT_TYPE: &str = "application/x-protobuf";
}

/// Hex-encoded sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
