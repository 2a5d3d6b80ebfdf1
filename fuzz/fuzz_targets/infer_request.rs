//! Any bytes as the body of `POST /v1/models/tiny/infer`: an answer or an error, never a panic
//! (protobuf decoding, tensor checks, PNG/JPEG decoding with its size limits, the models).
#![no_main]

use std::sync::LazyLock;

use cachenet_core::modelset::ModelSet;
use libfuzzer_sys::fuzz_target;

static SET: LazyLock<ModelSet> = LazyLock::new(|| {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny");
    ModelSet::load(&dir).expect("the tiny model set")
});

fuzz_target!(|body: &[u8]| {
    let _ = cachenet_edge::infer_request(&SET, body);
});
