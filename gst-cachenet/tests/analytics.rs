//! Cargo feature `analytics` (GStreamer >= 1.24): every classified frame also carries a
//! classification on the analytics relation meta. Run by `scripts/test-analytics.sh` against
//! GStreamer 1.26.
#![cfg(feature = "analytics")]

use std::path::PathBuf;

use gst::glib;
use gst::prelude::*;
use gst_analytics::prelude::*;
use gst_analytics::{AnalyticsClassificationMtd, AnalyticsODMtd, AnalyticsRelationMeta};
use gstcachenet::result::Classification;

fn harness(props: &[(&str, &str)]) -> gst_check::Harness {
    gst::init().unwrap();
    gstcachenet::plugin_register_static().unwrap();
    let el = gst::ElementFactory::make("cachenetclassify")
        .build()
        .unwrap();
    for (k, v) in props {
        el.set_property_from_str(k, v);
    }
    el.set_bus(Some(&gst::Bus::new()));
    let mut h = gst_check::Harness::with_element(&el, Some("sink"), Some("src"));
    h.set_src_caps_str("video/x-raw,format=GRAY8,width=16,height=16,framerate=30/1");
    h
}

fn tiny() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/tiny")
        .to_str()
        .unwrap()
        .to_string()
}

fn frame(value: u8) -> gst::Buffer {
    gst::Buffer::from_mut_slice(vec![value; 16 * 16])
}

fn classifications(buf: &gst::BufferRef) -> Vec<(String, f32)> {
    let meta = buf
        .meta::<AnalyticsRelationMeta>()
        .expect("a relation meta");
    meta.iter::<AnalyticsClassificationMtd>()
        .map(|c| {
            assert_eq!(c.len(), 1, "one class per classification");
            (c.quark(0).as_str().to_string(), c.level(0))
        })
        .collect()
}

#[test]
fn every_classified_frame_carries_a_classification_mtd() {
    // The full model (device mode) tells the tiny set's four grey levels apart.
    let mut h = harness(&[("model-dir", &tiny()), ("mode", "device")]);
    let mut labels = Vec::new();
    for value in [20u8, 230, 20] {
        let out = h.push_and_pull(frame(value)).unwrap();
        let roi = Classification::from_buffer(&out).expect("the ROI result");
        assert!(roi.class_id >= 0, "{roi:?}");
        assert_eq!(out.iter_meta::<AnalyticsRelationMeta>().count(), 1);
        let cls = classifications(&out);
        assert_eq!(cls.len(), 1);
        assert_eq!(cls[0].0, roi.label);
        assert!(
            (cls[0].1 as f64 - roi.confidence).abs() < 1e-6,
            "{cls:?} vs {roi:?}"
        );
        assert_eq!(
            gstcachenet::analytics::classification(&out),
            Some(cls[0].clone())
        );
        labels.push(roi.label);
    }
    assert_eq!(labels, ["black", "white", "black"]);
}

#[test]
fn an_upstream_relation_meta_is_extended_not_replaced() {
    let mut h = harness(&[("model-dir", &tiny())]);
    let mut buf = frame(20);
    let od_id = {
        let b = buf.get_mut().unwrap();
        let mut meta = AnalyticsRelationMeta::add(b);
        meta.add_od_mtd(glib::Quark::from_str("person"), 1, 2, 8, 8, 0.9)
            .unwrap()
            .id()
    };
    let out = h.push_and_pull(buf).unwrap();
    assert_eq!(out.iter_meta::<AnalyticsRelationMeta>().count(), 1);
    let meta = out.meta::<AnalyticsRelationMeta>().unwrap();
    assert_eq!(meta.len(), 2, "the detection and our classification");
    let od: Vec<_> = meta.iter::<AnalyticsODMtd>().collect();
    assert_eq!(od.len(), 1);
    assert_eq!(od[0].id(), od_id);
    assert_eq!(
        classifications(&out)[0].0,
        Classification::from_buffer(&out).unwrap().label
    );
}

#[test]
fn unclassified_frames_get_no_classification() {
    // Edge mode with nothing listening: the frame has no answer (class id -1).
    let mut h = harness(&[
        ("model-dir", &tiny()),
        ("mode", "edge"),
        ("edge-url", "http://127.0.0.1:9"),
        ("timeout-ms", "200"),
    ]);
    let out = h.push_and_pull(frame(20)).unwrap();
    let roi = Classification::from_buffer(&out).unwrap();
    assert_eq!((roi.class_id, roi.source.as_str()), (-1, "none"), "{roi:?}");
    assert!(out.meta::<AnalyticsRelationMeta>().is_none());
    assert_eq!(gstcachenet::analytics::classification(&out), None);
}
