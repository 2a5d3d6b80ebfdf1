//! Model-set loading and validation against the committed fixture set.

use std::path::{Path, PathBuf};

use cachenet_core::engine::Model;
use cachenet_core::manifest::Manifest;
use cachenet_core::maths::Classification;
use cachenet_core::modelset::ModelSet;
use cachenet_core::preprocess::normalize_into;
use cachenet_core::{CoreError, sha256_hex};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// A writable copy of the tiny set.
fn copy_set() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(fixtures().join("tiny")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
    }
    dir
}

fn edit_manifest(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("manifest.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

fn solid(set: &ModelSet, value: u8) -> Vec<f32> {
    let spec = &set.manifest.input;
    let px = vec![value; spec.len()];
    let mut t = vec![0.0; spec.len()];
    normalize_into(&px, spec, &mut t);
    t
}

#[test]
fn loads_and_runs_the_fixture_set() {
    let set = ModelSet::load(&fixtures().join("tiny")).unwrap();
    assert_eq!(set.manifest.selector.k, 2);
    assert_eq!(set.submodels.len(), 2);
    let dark = solid(&set, 20);
    let bright = solid(&set, 240);
    assert_eq!(set.classify_full(&dark).unwrap().class_id, 0);
    assert_eq!(set.classify_full(&bright).unwrap().class_id, 3);
    let full_dark = set.classify_full(&dark).unwrap();
    let full_bright = set.classify_full(&bright).unwrap();
    assert_eq!(set.select(&dark, &full_dark).unwrap().submodel, 0);
    assert_eq!(set.select(&bright, &full_bright).unwrap().submodel, 1);
    // Submodel 0 is sure about dark frames, unsure (ln 2) about bright ones.
    let sub0 = &set.submodels[0].model;
    let c = Classification::from_logits(&sub0.run(&dark).unwrap());
    assert!(c.is_hit(0.5) && c.class_id == 0);
    let c = Classification::from_logits(&sub0.run(&bright).unwrap());
    assert!((c.entropy - 2f32.ln()).abs() < 1e-3 && !c.is_hit(0.5));
    // A run into a reused buffer gives the same answer as a one-off run.
    let mut out = vec![7.0; 3];
    sub0.run_into(&dark, &mut out).unwrap();
    assert_eq!(out, sub0.run(&dark).unwrap());
    assert_eq!(set.submodels[1].sha256, sha256_hex(&set.submodels[1].bytes));
}

#[test]
fn missing_file_is_named() {
    let d = copy_set();
    std::fs::remove_file(d.path().join("submodel-1.onnx")).unwrap();
    let e = ModelSet::load(d.path()).unwrap_err();
    assert!(matches!(e, CoreError::Io { .. }));
    assert!(e.to_string().contains("submodel-1.onnx"), "{e}");
}

#[test]
fn missing_manifest_is_named() {
    let d = tempfile::tempdir().unwrap();
    let e = ModelSet::load(d.path()).unwrap_err().to_string();
    assert!(e.contains("manifest.json"), "{e}");
}

#[test]
fn sha256_mismatch_is_named() {
    let d = copy_set();
    let p = d.path().join("submodel-0.onnx");
    let mut bytes = std::fs::read(&p).unwrap();
    let n = bytes.len() - 1;
    bytes[n] ^= 0xff;
    std::fs::write(&p, bytes).unwrap();
    let e = ModelSet::load(d.path()).unwrap_err();
    assert!(matches!(e, CoreError::Checksum { .. }), "{e}");
    assert!(e.to_string().contains("submodel-0.onnx") && e.to_string().contains("sha256"));
}

#[test]
fn k_mismatch_is_reported() {
    let d = copy_set();
    edit_manifest(d.path(), |v| v["selector"]["k"] = 3.into());
    let e = Manifest::load(d.path()).unwrap_err().to_string();
    assert!(
        e.contains("K mismatch") && e.contains("manifest.json"),
        "{e}"
    );
}

#[test]
fn onnx_input_shape_disagreeing_with_manifest_is_reported() {
    let d = copy_set();
    let wrong = std::fs::read(fixtures().join("wrong-input.onnx")).unwrap();
    std::fs::write(d.path().join("full.onnx"), &wrong).unwrap();
    edit_manifest(d.path(), |v| {
        v["full_model"]["sha256"] = sha256_hex(&wrong).into();
        v["full_model"]["size"] = wrong.len().into();
    });
    let e = ModelSet::load(d.path()).unwrap_err();
    assert!(matches!(e, CoreError::Shape { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("full.onnx") && msg.contains("16"), "{msg}");
}

#[test]
fn corrupt_onnx_is_a_clear_error() {
    let e = Model::from_bytes("junk.onnx", b"not an onnx file", [1, 1, 8, 8], 4).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("junk.onnx: cannot load ONNX model"),
        "{e}"
    );
}

#[test]
fn structural_errors() {
    for (edit, needle) in [
        (
            Box::new(|v: &mut serde_json::Value| v["schema_version"] = 3.into())
                as Box<dyn Fn(&mut serde_json::Value)>,
            "schema_version 3 is not supported (this build reads 1 to 2",
        ),
        (
            Box::new(|v| v["submodels"][0]["input"] = v["input"].clone()),
            "submodels[0].input: a model's own input needs schema_version 2",
        ),
        (
            Box::new(|v| {
                v["schema_version"] = 2.into();
                v["full_model"]["input"] = v["input"].clone();
                v["full_model"]["input"]["mean"] = serde_json::json!([0.1, 0.2]);
            }),
            "full_model.input: mean and std need one value per channel",
        ),
        (
            Box::new(|v| {
                v["schema_version"] = 2.into();
                v["selector"]["input"] = serde_json::json!({"width": 3});
            }),
            "missing field",
        ),
        (Box::new(|v| v["input"]["channels"] = 3.into()), "channel"),
        (
            Box::new(|v| v["submodels"][0]["file"] = "../x.onnx".into()),
            "plain file name",
        ),
        (
            Box::new(|v| v["submodels"][1]["id"] = 7.into()),
            "ids must be",
        ),
        (Box::new(|v| v["threshold"] = (-1.0).into()), "threshold"),
        (Box::new(|v| v["extra"] = 1.into()), "unknown field"),
    ] {
        let d = copy_set();
        edit_manifest(d.path(), edit);
        let e = Manifest::load(d.path()).unwrap_err().to_string();
        assert!(e.contains(needle), "{needle}: {e}");
    }
}

/// The Python training maths wrote these vectors (`selector-vectors.json` beside the fixtures
/// and in every shipped model set): the Rust selector must agree, so the two cannot drift.
#[test]
fn selector_agrees_with_the_training_maths() {
    let mut files = vec![fixtures().join("selector-vectors.json")];
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    for e in std::fs::read_dir(&models).unwrap() {
        let p = e.unwrap().path().join("selector-vectors.json");
        if p.exists() {
            files.push(p);
        }
    }
    let mut cases = 0;
    for f in &files {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap();
        let k = v["k"].as_u64().unwrap() as usize;
        let sigma = v["sigma"].as_f64().unwrap();
        let (tau, gamma) = (v["tau"].as_f64().unwrap(), v["gamma"].as_f64().unwrap());
        let s13 = cachenet_core::selector::sigma_from_overlap(k, gamma, tau);
        assert!(
            (s13 - v["sigma_eq13"].as_f64().unwrap()).abs() < 1e-9,
            "{}",
            f.display()
        );
        for c in v["cases"].as_array().unwrap() {
            let z = [
                c["z"][0].as_f64().unwrap() as f32,
                c["z"][1].as_f64().unwrap() as f32,
            ];
            let zd = [c["z"][0].as_f64().unwrap(), c["z"][1].as_f64().unwrap()];
            let theta = cachenet_core::selector::angle(zd[0], zd[1]);
            assert!((theta - c["theta"].as_f64().unwrap()).abs() < 1e-9, "{c}");
            let codes = cachenet_core::selector::soft_codes(theta, k, sigma);
            for (a, b) in codes.iter().zip(c["codes"].as_array().unwrap()) {
                assert!((a - b.as_f64().unwrap()).abs() < 1e-9, "{c}");
            }
            // Points away from a sector boundary select the same submodel in f32.
            let sel = cachenet_core::selector::select(z, k, sigma);
            let want = c["submodel"].as_u64().unwrap() as u32;
            let mut sorted = codes.clone();
            sorted.sort_by(|a, b| b.partial_cmp(a).unwrap());
            if sorted.len() < 2 || sorted[0] - sorted[1] > 1e-6 {
                assert_eq!(sel.submodel, want, "{c}");
            }
            cases += 1;
        }
    }
    assert!(cases >= 50, "{cases} cases");
}

/// A selector declared to take the full model's probabilities must take `1xNx1x1`: the
/// fixture's image selector is refused with the shape named.
#[test]
fn selector_input_kind_is_checked() {
    let d = copy_set();
    edit_manifest(d.path(), |v| {
        v["selector"]["input"] = "probabilities".into()
    });
    let e = ModelSet::load(d.path()).unwrap_err().to_string();
    assert!(
        e.contains("selector.onnx") && e.contains("disagrees"),
        "{e}"
    );
    let d = copy_set();
    edit_manifest(d.path(), |v| v["selector"]["input"] = "pixels".into());
    let e = Manifest::load(d.path()).unwrap_err().to_string();
    assert!(e.contains("unknown variant"), "{e}");
}

/// Schema version 2: the full model and each submodel take inputs of their own; models
/// without one take the set's input; `inputs()` lists each distinct input once, full first.
#[test]
fn version_2_models_take_their_own_inputs() {
    let d = copy_set();
    edit_manifest(d.path(), |v| {
        v["schema_version"] = 2.into();
        let mut big = v["input"].clone();
        big["width"] = 32.into();
        big["height"] = 24.into();
        v["full_model"]["input"] = big.clone();
        v["submodels"][1]["input"] = big;
    });
    let m = Manifest::load(d.path()).unwrap();
    assert_eq!((m.full_input().width, m.full_input().height), (32, 24));
    assert_eq!(m.submodel_input(1), m.full_input());
    assert_eq!(m.submodel_input(0), &m.input);
    let sizes: Vec<_> = m.inputs().iter().map(|i| (i.width, i.height)).collect();
    let (w, h) = (m.input.width, m.input.height);
    assert_eq!(sizes, vec![(32, 24), (w, h)]);
    // The ONNX files still take the fixture's size: loading checks each against its own input.
    let e = ModelSet::load(d.path()).unwrap_err().to_string();
    assert!(e.contains("full.onnx"), "{e}");
}

/// The shipped set (class-consistent selector): a frame's submodel follows the full model's
/// class, and every submodel serves at least one class.
#[test]
fn shipped_set_selects_by_the_full_models_class() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/fashion-mnist");
    let set = ModelSet::load(&dir).unwrap();
    assert_eq!(set.manifest.selector_image_input(), None);
    let n = set.manifest.labels.len();
    let k = set.manifest.selector.k;
    let frame = solid(&set, 0); // ignored by this selector
    let mut used = std::collections::HashSet::new();
    for c in 0..n {
        let mut p = vec![0.0; n];
        p[c] = 1.0;
        let sel = set
            .select(&frame, &Classification::from_probabilities(p))
            .unwrap();
        assert!((sel.submodel as usize) < k);
        used.insert(sel.submodel);
    }
    assert_eq!(used.len(), k, "every submodel serves a class");
    // The real posterior of a frame selects like its class.
    let full = set.classify_full(&frame).unwrap();
    let mut p = vec![0.0; n];
    p[full.class_id] = 1.0;
    if full.confidence > 0.999 {
        assert_eq!(
            set.select(&frame, &full).unwrap().submodel,
            set.select(&frame, &Classification::from_probabilities(p))
                .unwrap()
                .submodel
        );
    }
}
