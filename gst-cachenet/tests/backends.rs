//! The element's `backend` and `execution-provider`: the plan of each loaded model in `stats`,
//! a graph `backend=direct` cannot take refused at start with the reason, and (built with the
//! `onnxruntime` feature, `scripts/test.sh` runs it so with the wheel's library) the set run by
//! onnxruntime giving the answers of the default engine, a CUDA provider on a machine without
//! one falling back to the CPU with one warning.

use gst::prelude::*;

mod common;
#[cfg(feature = "onnxruntime")]
use common::edge;
use common::{harness, init, tiny};

fn repo_models(name: &str) -> String {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models")
        .join(name)
        .display()
        .to_string()
}

fn plans(el: &gst::Element) -> Vec<String> {
    el.property::<gst::Structure>("stats")
        .get::<gst::Array>("plans")
        .unwrap()
        .iter()
        .map(|v| v.get::<String>().unwrap())
        .collect()
}

/// The results of 20 frames: 10 dark (hits), one bright (a miss the edge answers, which swaps
/// in submodel 1), then, once the swap is done, 9 bright (hits on it).
#[cfg(feature = "onnxruntime")]
fn answers(h: &mut gst_check::Harness, el: &gst::Element) -> Vec<(String, bool)> {
    let mut push = |v: u8| {
        let out = h
            .push_and_pull(gst::Buffer::from_mut_slice(vec![v; 256]))
            .unwrap();
        let r = gstcachenet::result::Classification::from_buffer(&out).unwrap();
        (r.label, r.source == "edge")
    };
    let mut all: Vec<(String, bool)> = (0..11)
        .map(|i| push(if i < 10 { 20 } else { 240 }))
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while el.property::<u32>("swaps-pending") > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the swap never finished"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    all.extend((0..9).map(|_| push(240)));
    all
}

/// Error text of a start that fails.
fn start_error(props: &[(&str, &str)]) -> String {
    init();
    let el = gst::ElementFactory::make("cachenetclassify")
        .build()
        .unwrap();
    for (k, v) in props {
        el.set_property_from_str(k, v);
    }
    let pipeline = gst::Pipeline::new();
    pipeline.add(&el).unwrap();
    assert!(pipeline.set_state(gst::State::Paused).is_err());
    let msg = pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(gst::ClockTime::from_seconds(5), &[gst::MessageType::Error])
        .expect("an error message");
    let _ = pipeline.set_state(gst::State::Null);
    match msg.view() {
        gst::MessageView::Error(e) => format!("{} {:?}", e.error(), e.debug()),
        _ => unreachable!(),
    }
}

#[test]
fn each_models_plan_is_in_stats() {
    let tiny = tiny().display().to_string();
    for (backend, want) in [("auto", "direct"), ("direct", "direct"), ("tract", "tract")] {
        let (mut h, el, _) = harness(&[
            ("model-dir", &tiny),
            ("mode", "submodel-only"),
            ("backend", backend),
        ]);
        h.push_and_pull(gst::Buffer::from_mut_slice(vec![20u8; 256]))
            .unwrap();
        assert_eq!(
            plans(&el),
            [format!("submodel 0: {want}")],
            "backend={backend}"
        );
    }
    // The real set's specialists have depthwise convolutions: auto runs them on tract and
    // says why the own plan refused them.
    let (mut h, el, _) = harness(&[
        ("model-dir", &repo_models("real-footage")),
        ("mode", "submodel-only"),
    ]);
    h.set_src_caps_str("video/x-raw,format=RGB,width=32,height=24,framerate=30/1");
    h.push_and_pull(gst::Buffer::from_mut_slice(vec![90u8; 32 * 24 * 3]))
        .unwrap();
    let p = plans(&el);
    assert!(
        p.len() == 1 && p[0].starts_with("submodel 0: tract; the own plan refused the graph: "),
        "{p:?}"
    );
}

#[test]
fn backend_direct_refuses_a_graph_it_cannot_take_with_the_reason() {
    let e = start_error(&[
        ("model-dir", &repo_models("real-footage")),
        ("mode", "submodel-only"),
        ("backend", "direct"),
    ]);
    assert!(e.contains("refuses this graph: operator "), "{e}");
}

#[cfg(not(feature = "onnxruntime"))]
#[test]
fn backend_onnxruntime_needs_the_feature() {
    let e = start_error(&[
        ("model-dir", &tiny().display().to_string()),
        ("mode", "submodel-only"),
        ("backend", "onnxruntime"),
    ]);
    assert!(e.contains("cargo feature onnxruntime"), "{e}");
}

/// onnxruntime runs the whole CacheNet path (submodels on the device, the edge for misses) to
/// the same answers as the default engine; asking for CUDA where onnxruntime has none runs on
/// the CPU after one warning that names why.
#[cfg(feature = "onnxruntime")]
#[test]
fn onnxruntime_gives_the_same_answers_and_a_missing_provider_falls_back_to_the_cpu() {
    let e = edge();
    let tiny = tiny().display().to_string();
    let url = e.url();
    let base = [("model-dir", tiny.as_str()), ("edge-url", url.as_str())];
    let (mut h, el, _) = harness(&base);
    let want = answers(&mut h, &el);
    let mut props = base.to_vec();
    props.extend([("backend", "onnxruntime"), ("execution-provider", "cuda")]);
    let (mut h, el, bus) = harness(&props);
    let got = answers(&mut h, &el);
    assert_eq!(got, want);
    assert_eq!(got.iter().filter(|(_, edge)| *edge).count(), 1, "{got:?}");
    let p = plans(&el);
    let fallback = "onnxruntime (cpu); the cuda execution provider could not start";
    assert!(
        p.iter().all(|l| l.contains(fallback)) && p.len() == 2,
        "both submodels on the CPU: {p:?}"
    );
    let warnings: Vec<String> = std::iter::from_fn(|| bus.pop())
        .filter_map(|m| match m.view() {
            gst::MessageView::Warning(w) => Some(w.error().to_string()),
            _ => None,
        })
        .collect();
    let fallbacks = warnings.iter().filter(|w| w.contains("cuda")).count();
    assert_eq!(fallbacks, 1, "one warning for the element: {warnings:?}");
    assert!(warnings.iter().any(|w| w.contains("running on the CPU")));
}
