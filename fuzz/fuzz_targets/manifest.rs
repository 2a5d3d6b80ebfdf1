//! Any bytes as a manifest received from the edge or read from cache-dir: parsed and validated,
//! or refused with a message, never a panic.
#![no_main]

use cachenet_core::manifest::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(m) = Manifest::from_json(bytes) {
        // A manifest that validates has usable shapes and names.
        let _ = m.input.shape();
        let _ = m.input.len();
        for s in &m.submodels {
            let _ = s.model_file();
        }
    }
});
