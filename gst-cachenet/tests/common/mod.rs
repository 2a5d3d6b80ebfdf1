//! What the in-process element tests share: GStreamer with the plugin registered, the tiny
//! fixture set (dark frames belong to submodel 0, bright ones to submodel 1) and a real edge
//! server serving it on a bound loopback port. Each test binary uses a part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Once;

use cachenet_edge::{AppState, Background, Config};

pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstcachenet::plugin_register_static().unwrap();
    });
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
