//! An application that links `gstcachenet` *and* loads the built plugin: two copies of the
//! element's code in one process, both using `CacheNetMeta`. Needs `cargo build --workspace`
//! first (the README's test command does it).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use gst::prelude::*;
use gstcachenet::meta::CacheNetMeta;
use gstcachenet::result::Classification;

fn plugin_file() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("debug/libgstcachenet.so")
}

#[test]
fn linked_crate_reads_and_adds_the_loaded_plugins_meta() {
    gst::init().unwrap();
    let plugin = plugin_file();
    assert!(
        plugin.exists(),
        "{} (cargo build --workspace first)",
        plugin.display()
    );
    // The plugin (the second copy) registers the element, and the meta on its first frame.
    gst::Plugin::load_file(&plugin).unwrap();
    let tiny = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny");
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc num-buffers=3 pattern=black ! video/x-raw,format=GRAY8,width=16,height=16 ! \
         cachenetclassify model-dir={} mode=device post-messages=false ! \
         fakesink name=sink signal-handoffs=true",
        tiny.display()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    // Per frame: what this crate read from the plugin's meta, and from a meta it added itself.
    type Seen = Vec<(Classification, Option<Classification>)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let sink = pipeline.by_name("sink").unwrap();
    let s2 = seen.clone();
    sink.connect("handoff", false, move |args| {
        let buf = args[1].get::<gst::Buffer>().unwrap();
        // This crate's copy finds the plugin's registration by name.
        let m = buf
            .meta::<CacheNetMeta>()
            .expect("the plugin's CacheNetMeta");
        let from_plugin = m.result();
        // ... and adds one with the plugin's registered meta info.
        let mut own = gst::Buffer::with_size(4).unwrap();
        let r = gstcachenet::runtime::FrameResult {
            class_id: 2,
            label: "bright".into(),
            confidence: 0.75,
            entropy: 0.5,
            source: gstcachenet::runtime::Source::Device,
            hit: true,
            submodel: 1,
            degraded: false,
            deferred: false,
            reused: false,
            probabilities: vec![0.1, 0.15, 0.75],
            threshold: 0.5,
        };
        CacheNetMeta::add(own.get_mut().unwrap(), &r);
        let copied = own.copy();
        s2.lock().unwrap().push((
            from_plugin,
            copied.meta::<CacheNetMeta>().map(|m| m.result()),
        ));
        None
    });
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(20),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("EOS");
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(matches!(msg.view(), gst::MessageView::Eos(_)), "{msg:?}");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    for (from_plugin, own) in seen.iter() {
        assert_eq!(
            (from_plugin.class_id, from_plugin.label.as_str()),
            (0, "black")
        );
        assert_eq!(from_plugin.source, "device");
        let own = own.as_ref().expect("the meta survives a copy");
        assert_eq!(
            (own.class_id, own.label.as_str(), own.hit),
            (2, "bright", true)
        );
    }
}
