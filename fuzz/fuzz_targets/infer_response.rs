//! Any bytes as the body of an edge's 200 answer to `POST .../infer`, as the element takes it:
//! protobuf decoding, then the checks against the manifest (the tiny fixture set's and the
//! shipped set's). An answer that passes gives a result without a panic: its class has a
//! label, its confidence and entropy are finite.
#![no_main]

use std::sync::LazyLock;

use cachenet_core::manifest::Manifest;
use cachenet_core::maths::Classification;
use cachenet_core::proto::InferResponse;
use gstcachenet::remote::check_response;
use libfuzzer_sys::fuzz_target;
use prost::Message;

static MANIFESTS: LazyLock<Vec<Manifest>> = LazyLock::new(|| {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    ["tests/fixtures/tiny", "models/fashion-mnist"]
        .iter()
        .map(|d| Manifest::load(&root.join(d)).expect("a manifest of the repository"))
        .collect()
});

fuzz_target!(|bytes: &[u8]| {
    let Ok(response) = InferResponse::decode(bytes) else {
        return;
    };
    for m in MANIFESTS.iter() {
        if check_response(m, &response).is_ok() {
            let c = Classification::from_probabilities(response.probabilities.clone());
            let _label = &m.labels[response.class_id as usize];
            assert!(
                c.entropy.is_finite()
                    && response.probabilities[response.class_id as usize].is_finite()
            );
        }
    }
});
