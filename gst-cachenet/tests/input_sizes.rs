//! A model set whose models take different inputs (schema version 2, `tests/fixtures/tiny-rgb`):
//! the full model 12x10 RGB, the submodels 6x6 RGB, the selector its own 4x4 gray image. The
//! element scales each frame (or region) once per input a model of it runs, and a miss sends
//! the edge the frame at the full model's input (the edge refuses any other size).

use std::path::PathBuf;

use cachenet_edge::{AppState, Background, Config};
use gst::prelude::*;

fn init() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstcachenet::plugin_register_static().unwrap();
    });
}

fn tiny_rgb() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-rgb")
}

fn edge() -> Background {
    let state = AppState::load(Config {
        model_dirs: vec![tiny_rgb()],
        ..Config::default()
    })
    .unwrap();
    Background::start(state, "127.0.0.1:0").unwrap()
}

const W: usize = 64;
const H: usize = 48;

fn harness(props: &[(&str, &str)]) -> (gst_check::Harness, gst::Element) {
    init();
    let el = gst::ElementFactory::make("cachenetclassify")
        .property("prefetch", false)
        .property("model-dir", tiny_rgb().to_str().unwrap())
        .build()
        .unwrap();
    for (k, v) in props {
        el.set_property_from_str(k, v);
    }
    let mut h = gst_check::Harness::with_element(&el, Some("sink"), Some("src"));
    h.set_src_caps_str(&format!(
        "video/x-raw,format=RGBx,width={W},height={H},framerate=30/1"
    ));
    (h, el)
}

/// A solid frame of gray level `v`.
fn push(h: &mut gst_check::Harness, v: u8) -> gstcachenet::result::Classification {
    let mut buf = gst::Buffer::from_mut_slice(vec![v; W * H * 4]);
    buf.get_mut()
        .unwrap()
        .set_pts(gst::ClockTime::from_mseconds(33));
    let out = h.push_and_pull(buf).unwrap();
    gstcachenet::result::Classification::from_buffer(&out).unwrap()
}

fn stat(el: &gst::Element, name: &str) -> u64 {
    el.property::<gst::Structure>("stats").get(name).unwrap()
}

/// CacheNet: the local 6x6 submodel answers dark frames; a bright frame misses, the edge's
/// 12x10 full model answers it and its 4x4 selector picks submodel 1, which answers the next
/// bright frame locally.
#[test]
fn cachenet_runs_each_model_at_its_own_input() {
    let e = edge();
    let (mut h, el) = harness(&[("edge-url", &e.url())]);
    let r = push(&mut h, 20);
    assert_eq!(
        (r.source.as_str(), r.hit, r.submodel, r.label.as_str()),
        ("device", true, 0, "black")
    );
    let r = push(&mut h, 230);
    assert_eq!(
        (r.source.as_str(), r.hit, r.label.as_str()),
        ("edge", false, "white")
    );
    assert!(
        !r.degraded,
        "the edge took the frame at the full model's input"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while el.property::<u32>("swaps-pending") > 0 {
        assert!(std::time::Instant::now() < deadline, "the swap never ended");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let r = push(&mut h, 230);
    assert_eq!(
        (r.source.as_str(), r.hit, r.submodel, r.label.as_str()),
        ("device", true, 1, "white")
    );
    assert_eq!(stat(&el, "offload-failures"), 0);
    assert_eq!(stat(&el, "offloads"), 1);
}

/// Device mode runs the local full model at 12x10; edge mode sends every frame at 12x10.
#[test]
fn device_and_edge_modes_use_the_full_models_input() {
    let (mut h, _) = harness(&[("mode", "device")]);
    for (v, label) in [
        (20u8, "black"),
        (100, "dark"),
        (160, "light"),
        (230, "white"),
    ] {
        let r = push(&mut h, v);
        assert_eq!((r.source.as_str(), r.label.as_str()), ("device", label));
    }
    let e = edge();
    let (mut h, el) = harness(&[("mode", "edge"), ("edge-url", &e.url())]);
    for (v, label) in [(20u8, "black"), (160, "light")] {
        let r = push(&mut h, v);
        assert_eq!((r.source.as_str(), r.label.as_str()), ("edge", label));
    }
    assert_eq!(stat(&el, "offload-failures"), 0);
}

/// Regions of one crop size get scalers to every input too: a dark and a bright region of the
/// same frame are answered by the submodel and by the edge.
#[test]
fn regions_are_scaled_to_each_input() {
    let e = edge();
    let (mut h, el) = harness(&[("edge-url", &e.url()), ("regions", "roi")]);
    let mut pixels = vec![20u8; W * H * 4];
    for y in 0..H {
        for x in W / 2..W {
            pixels[(y * W + x) * 4..(y * W + x) * 4 + 4].fill(230);
        }
    }
    let mut buf = gst::Buffer::from_mut_slice(pixels);
    {
        let b = buf.get_mut().unwrap();
        b.set_pts(gst::ClockTime::from_mseconds(33));
        for x in [0u32, W as u32 / 2] {
            gst_video::VideoRegionOfInterestMeta::add(b, "face", (x, 0, W as u32 / 2, H as u32));
        }
    }
    let out = h.push_and_pull(buf).unwrap();
    let labels: Vec<(String, String)> = out
        .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
        .filter_map(|m| {
            let s = m.param("cachenet/classification")?;
            Some((
                s.get::<String>("label").unwrap(),
                s.get::<String>("source").unwrap(),
            ))
        })
        .collect();
    assert_eq!(
        labels,
        vec![
            ("black".to_string(), "device".to_string()),
            ("white".to_string(), "edge".to_string())
        ]
    );
    assert_eq!(stat(&el, "offload-failures"), 0);
}
