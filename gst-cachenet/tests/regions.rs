//! `regions=roi` (per-object classification), `interval`, late frames (QoS) and the latency
//! query, with gst_check::Harness against a real in-process edge server and the tiny fixture
//! set (dark pixels belong to submodel 0, bright ones to submodel 1).

use std::time::{Duration, Instant};

use gst::prelude::*;
use gstcachenet::objects::Bounds;
use gstcachenet::result::Classification;

const W: u32 = 96;
const H: u32 = 32;

mod common;
use common::{edge, init, tiny};

struct Hn {
    h: gst_check::Harness,
    el: gst::Element,
    frame: u64,
}

/// A harness around a configured element (properties as gst-launch strings), GRAY8 W x H.
fn harness(props: &[(&str, &str)]) -> Hn {
    init();
    // Prefetching off: these tests count swaps of their own.
    let el = gst::ElementFactory::make("cachenetclassify")
        .property("prefetch", false)
        .build()
        .unwrap();
    el.set_property_from_str("model-dir", tiny().to_str().unwrap());
    for (k, v) in props {
        el.set_property_from_str(k, v);
    }
    el.set_bus(Some(&gst::Bus::new()));
    let mut h = gst_check::Harness::with_element(&el, Some("sink"), Some("src"));
    h.set_src_caps_str(&format!(
        "video/x-raw,format=GRAY8,width={W},height={H},framerate=30/1"
    ));
    Hn { h, el, frame: 0 }
}

/// A region: type, tracker id (0: none), rectangle, and the pixel value painted into it.
type Roi = (&'static str, i32, Bounds, u8);

impl Hn {
    /// Push one frame (mid-gray background) with the regions painted and attached as ROI
    /// metas; returns every region's type, rectangle and result.
    fn push(&mut self, rois: &[Roi]) -> Vec<(String, Bounds, Classification)> {
        self.push_as(gst_video::VideoFormat::Gray8, rois)
    }

    /// Renegotiate: the same frame size in `format` from now on.
    fn set_format(&mut self, format: gst_video::VideoFormat) {
        self.h.set_src_caps_str(&format!(
            "video/x-raw,format={},width={W},height={H},framerate=30/1",
            format.to_str()
        ));
    }

    /// [`Hn::push`] with the frame in `format` (GRAY8, RGB or NV12: gray pixels, neutral
    /// chroma; NV12 luma in limited range), which must be the negotiated one.
    fn push_as(
        &mut self,
        format: gst_video::VideoFormat,
        rois: &[Roi],
    ) -> Vec<(String, Bounds, Classification)> {
        let mut px = vec![128u8; (W * H) as usize];
        for (_, _, (x, y, w, h), value) in rois {
            for yy in *y..(y + h).min(H) {
                for xx in *x..(x + w).min(W) {
                    px[(yy * W + xx) as usize] = *value;
                }
            }
        }
        let px = match format {
            gst_video::VideoFormat::Gray8 => px,
            gst_video::VideoFormat::Rgb => px.iter().flat_map(|&v| [v, v, v]).collect(),
            gst_video::VideoFormat::Nv12 => {
                let mut yuv: Vec<u8> = px
                    .iter()
                    .map(|&v| (16.0 + v as f32 * 219.0 / 255.0).round() as u8)
                    .collect();
                yuv.resize((W * H + W * H / 2) as usize, 128);
                yuv
            }
            other => panic!("no test frames in {other:?}"),
        };
        let mut buf = gst::Buffer::from_mut_slice(px);
        {
            let b = buf.get_mut().unwrap();
            b.set_pts(gst::ClockTime::from_mseconds(33 * self.frame));
            for (t, id, rect, _) in rois {
                let mut m = gst_video::VideoRegionOfInterestMeta::add(b, t, *rect);
                m.set_id(*id);
            }
        }
        self.frame += 1;
        let out = self.h.push_and_pull(buf).unwrap();
        assert!(
            Classification::from_buffer(&out).is_none(),
            "regions=roi adds no whole-frame result"
        );
        Classification::regions(&out)
    }

    fn stat(&self, name: &str) -> u64 {
        self.el
            .property::<gst::Structure>("stats")
            .get::<u64>(name)
            .unwrap()
    }

    fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.el.property::<u32>("swaps-pending") > 0 {
            assert!(Instant::now() < deadline, "the swap never finished");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

const DARK: Roi = ("thing", 0, (0, 0, 32, 32), 10);
const BRIGHT: Roi = ("thing", 0, (64, 0, 32, 32), 245);

/// Renegotiation mid-stream with regions (RGB -> GRAY8 -> NV12): the regions of each format
/// are scaled for that format (the per-region scalers are rebuilt with the frame's), so every
/// result equals that of an element that saw the format from the start.
#[test]
fn renegotiation_rebuilds_the_region_scalers() {
    use gst_video::VideoFormat::{Gray8, Nv12, Rgb};
    let rois = [DARK, BRIGHT, ("thing", 0, (40, 8, 17, 13), 200)];
    let answers = |r: Vec<(String, Bounds, Classification)>| -> Vec<(Bounds, i32, f64)> {
        r.into_iter()
            .map(|(_, b, c)| (b, c.class_id, c.entropy))
            .collect()
    };
    let mut h = harness(&[("regions", "roi")]);
    for format in [Rgb, Gray8, Nv12] {
        let mut fresh = harness(&[("regions", "roi")]);
        fresh.set_format(format);
        let want = answers(fresh.push_as(format, &rois));
        h.set_format(format);
        let got = answers(h.push_as(format, &rois));
        assert_eq!(got.len(), want.len(), "{format:?}");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!((g.0, g.1), (w.0, w.1), "{format:?}");
            assert!(
                (g.2 - w.2).abs() < 1e-6,
                "{format:?}: entropy {} after renegotiation, {} from the start",
                g.2,
                w.2
            );
        }
    }
}

#[test]
fn each_region_is_an_object_with_its_own_submodel() {
    let e = edge();
    let mut h = harness(&[
        ("edge-url", &e.url()),
        ("regions", "roi"),
        ("cache-size", "2"),
        ("unique-id", "7"),
    ]);
    // The dark region hits submodel 0 at once; the bright one misses, the edge answers and
    // selects submodel 1 for that object alone.
    let r = h.push(&[DARK, BRIGHT]);
    assert_eq!(r.len(), 2);
    let (dark, bright) = (&r[0].2, &r[1].2);
    assert_eq!(r[0].1, DARK.2);
    assert_eq!(
        (dark.label.as_str(), dark.hit, dark.submodel),
        ("black", true, 0)
    );
    assert_eq!(
        (
            bright.label.as_str(),
            bright.source.as_str(),
            bright.submodel
        ),
        ("white", "edge", 1)
    );
    assert_eq!((dark.unique_id, bright.unique_id), (7, 7));
    assert_ne!(dark.object_id, bright.object_id);
    h.settle();
    // From now on both objects hit, each on its own submodel, with no more swaps or offloads;
    // the regions move a little and keep their objects.
    for step in 1..6u32 {
        let d = ("thing", 0, (step, 0, 32, 32), 10);
        let b = ("thing", 0, (64 - step, 0, 32, 32), 245);
        let r = h.push(&[b, d]);
        assert_eq!(
            (r[0].2.hit, r[0].2.submodel, r[0].2.label.as_str()),
            (true, 1, "white")
        );
        assert_eq!(
            (r[1].2.hit, r[1].2.submodel, r[1].2.label.as_str()),
            (true, 0, "black")
        );
        assert_eq!(r[0].2.object_id, bright.object_id);
        assert_eq!(r[1].2.object_id, dark.object_id);
    }
    assert_eq!(h.stat("offloads"), 1);
    assert_eq!(h.stat("swaps"), 1);
    assert_eq!(h.stat("objects"), 3, "two regions and the frame");
    assert_eq!(
        h.stat("frames"),
        12,
        "one classification per region and frame"
    );
}

/// With regions=roi each object's hits are audited with the object's crop: the edge answers
/// for that crop (dark and bright objects each get their own class back).
#[test]
fn each_regions_hits_are_audited_with_its_crop() {
    let e = edge();
    let mut h = harness(&[
        ("edge-url", &e.url()),
        ("regions", "roi"),
        ("cache-size", "2"),
        ("audit-interval", "1"),
        ("audit-seed", "9"),
    ]);
    let bus = h.el.bus().unwrap();
    h.push(&[DARK, BRIGHT]);
    h.settle();
    let mut seen = std::collections::HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "audits of both objects: {seen:?}"
        );
        let r = h.push(&[DARK, BRIGHT]);
        assert!(r.iter().all(|(_, _, c)| c.hit), "{r:?}");
        let objects: Vec<u64> = r.iter().map(|(_, _, c)| c.object_id.unwrap()).collect();
        while let Some(m) = bus.pop_filtered(&[gst::MessageType::Element]) {
            let s = m.structure().unwrap();
            if s.name() != "cachenet-audit" {
                continue;
            }
            let object = s.get::<u64>("object-id").unwrap();
            assert!(objects.contains(&object), "{s}");
            assert!(s.get::<bool>("agree").unwrap(), "{s}");
            seen.insert(object, s.get::<String>("edge-label").unwrap());
        }
    }
    let mut labels: Vec<_> = seen.into_values().collect();
    labels.sort();
    assert_eq!(labels, ["black", "white"]);
    assert_eq!(h.stat("misses"), 1, "audits are no misses");
}

#[test]
fn regions_are_filtered_by_type_and_size() {
    let mut h = harness(&[
        ("regions", "roi"),
        ("roi-types", "face,thing"),
        ("min-size", "16"),
    ]);
    let r = h.push(&[
        DARK,
        ("car", 0, (40, 0, 20, 20), 10),
        ("face", 0, (64, 0, 12, 12), 10),
        ("face", 0, (64, 12, 20, 20), 10),
    ]);
    let kinds: Vec<(&str, Bounds)> = r.iter().map(|(t, rect, _)| (t.as_str(), *rect)).collect();
    assert_eq!(kinds, vec![("thing", DARK.2), ("face", (64, 12, 20, 20))]);
    // A region partly outside the frame is clipped, not refused.
    let r = h.push(&[("thing", 0, (80, 16, 64, 64), 10)]);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].2.label, "black");
}

#[test]
fn max_offloads_bounds_a_crowded_frame() {
    let e = edge();
    // threshold 0: every region misses (H >= 0), whatever submodel has arrived meanwhile.
    let mut h = harness(&[
        ("edge-url", &e.url()),
        ("regions", "roi"),
        ("max-offloads", "1"),
        ("threshold", "0"),
    ]);
    let crowd: Vec<Roi> = (0..4)
        .map(|i| ("thing", 0, (i * 24, 0, 20, 20), 245))
        .collect();
    let r = h.push(&crowd);
    assert_eq!(r.len(), 4);
    let offloaded = r.iter().filter(|(_, _, c)| c.source == "edge").count();
    let deferred: Vec<&Classification> =
        r.iter().map(|(_, _, c)| c).filter(|c| c.deferred).collect();
    assert_eq!(offloaded, 1);
    assert_eq!(deferred.len(), 3);
    for c in deferred {
        assert_eq!(
            (c.source.as_str(), c.hit, c.degraded),
            ("device", false, false)
        );
        assert!(c.class_id >= 0, "a deferred region keeps its local answer");
    }
    assert_eq!((h.stat("offloads"), h.stat("deferred")), (1, 3));
}

#[test]
fn objects_unseen_for_track_timeout_frames_are_forgotten() {
    let mut h = harness(&[("regions", "roi"), ("track-timeout", "2")]);
    let first = h.push(&[DARK])[0].2.object_id;
    assert_eq!(h.stat("objects"), 2);
    h.push(&[]);
    h.push(&[]);
    assert_eq!(h.stat("objects"), 2, "still within the timeout");
    h.push(&[]);
    assert_eq!((h.stat("objects"), h.stat("objects-dropped")), (1, 1));
    // The same place again is a new object now.
    assert_ne!(h.push(&[DARK])[0].2.object_id, first);
}

#[test]
fn interval_runs_a_model_on_every_nth_frame_and_reuses_results_between() {
    let mut h = harness(&[("regions", "roi"), ("interval", "3")]);
    let reused: Vec<bool> = (0..7).map(|_| h.push(&[DARK])[0].2.reused).collect();
    assert_eq!(reused, vec![false, true, true, false, true, true, false]);
    assert_eq!((h.stat("frames"), h.stat("reused")), (3, 4));
    // Whole frames too.
    let mut h = harness(&[("interval", "2")]);
    let mut runs = Vec::new();
    for _ in 0..4 {
        let out =
            h.h.push_and_pull(gst::Buffer::from_mut_slice(vec![10u8; (W * H) as usize]))
                .unwrap();
        runs.push(Classification::from_buffer(&out).unwrap().reused);
    }
    assert_eq!(runs, vec![false, true, false, true]);
}

#[test]
fn late_frames_run_no_model_but_keep_their_result() {
    let mut h = harness(&[("regions", "roi")]);
    h.push(&[DARK]);
    // Downstream: everything up to running time 10 s is late.
    assert!(h.h.push_upstream_event(gst::event::Qos::new(
        gst::QOSType::Underflow,
        2.0,
        5_000_000_000,
        gst::ClockTime::from_seconds(5),
    )));
    let r = h.push(&[DARK]);
    assert!(r[0].2.reused, "a late frame reuses the last result");
    assert_eq!(r[0].2.label, "black");
    assert_eq!((h.stat("frames"), h.stat("reused")), (1, 1));
    // skip-late=false: every frame runs its model.
    let mut h = harness(&[("regions", "roi"), ("skip-late", "false")]);
    h.push(&[DARK]);
    h.h.push_upstream_event(gst::event::Qos::new(
        gst::QOSType::Underflow,
        2.0,
        5_000_000_000,
        gst::ClockTime::from_seconds(5),
    ));
    assert!(!h.push(&[DARK])[0].2.reused);
}

#[test]
fn latency_query_adds_the_elements_processing_time() {
    let mut h = harness(&[("regions", "roi")]);
    h.h.set_upstream_latency(gst::ClockTime::from_mseconds(10));
    let lat = h.h.query_latency().expect("a latency answer");
    assert!(lat > gst::ClockTime::from_mseconds(10), "{lat}");
    assert!(lat < gst::ClockTime::from_mseconds(1000), "{lat}");
    h.push(&[]);
}
