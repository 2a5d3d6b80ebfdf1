//! What the in-process element tests share: GStreamer with the plugin registered, the tiny
//! fixture set (dark frames belong to submodel 0, bright ones to submodel 1) and a real edge
//! server serving it on a bound loopback port, and a harness around the element. Each test
//! binary uses a part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Once;

use cachenet_edge::{AppState, Background, Config};
use gst::prelude::*;

pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstcachenet::plugin_register_static().unwrap();
    });
}

/// A `cachenetclassify` (prefetch off: tests count their own downloads; properties as
/// gst-launch strings) on its own bus, in a harness fed 16x16 GRAY8 frames.
pub fn harness(props: &[(&str, &str)]) -> (gst_check::Harness, gst::Element, gst::Bus) {
    init();
    let el = gst::ElementFactory::make("cachenetclassify")
        .property("prefetch", false)
        .build()
        .unwrap();
    for (k, v) in props {
        el.set_property_from_str(k, v);
    }
    let bus = gst::Bus::new();
    el.set_bus(Some(&bus));
    let mut h = gst_check::Harness::with_element(&el, Some("sink"), Some("src"));
    h.set_src_caps_str("video/x-raw,format=GRAY8,width=16,height=16,framerate=30/1");
    (h, el, bus)
}

pub fn tiny() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny")
}

pub fn edge() -> Background {
    let state = AppState::load(Config {
        model_dirs: vec![tiny()],
        ..Config::default()
    })
    .unwrap();
    Background::start(state, "127.0.0.1:0").unwrap()
}
