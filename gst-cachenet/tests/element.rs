//! `cachenetclassify` with gst_check::Harness and real pipelines, against a real in-process edge
//! server (the tiny fixture set: dark frames belong to submodel 0, bright ones to submodel 1).

use std::net::TcpListener;
use std::time::{Duration, Instant};

use cachenet_core::proto;
use cachenet_edge::{AppState, Background, Config};
use gst::prelude::*;
use prost::Message;

mod common;
use common::{edge, init, tiny};
#[path = "common/http.rs"]
mod http;
#[path = "common/process.rs"]
mod process;

struct H {
    h: gst_check::Harness,
    el: gst::Element,
    bus: gst::Bus,
}

/// The element with `props`. Prefetching is off unless `props` turn it on: the other tests
/// count downloads and swaps of their own.
fn harness(props: &[(&str, glib::Value)]) -> H {
    init();
    let el = gst::ElementFactory::make("cachenetclassify")
        .property("prefetch", false)
        .build()
        .unwrap();
    set_props(&el, props);
    let bus = gst::Bus::new();
    el.set_bus(Some(&bus));
    let mut h = gst_check::Harness::with_element(&el, Some("sink"), Some("src"));
    h.set_src_caps_str("video/x-raw,format=GRAY8,width=16,height=16,framerate=30/1");
    H { h, el, bus }
}

use gst::glib;

/// Strings go through the string parser (enum nicks such as mode=edge), as in gst-launch.
fn set_props(el: &gst::Element, props: &[(&str, glib::Value)]) {
    for (k, v) in props {
        match v.get::<String>() {
            Ok(s) => el.set_property_from_str(k, &s),
            Err(_) => el.set_property_from_value(k, v),
        }
    }
}

fn v<T: ToValue>(x: T) -> glib::Value {
    x.to_value()
}

fn local(extra: &[(&str, glib::Value)]) -> H {
    let mut p = vec![("model-dir", v(tiny().to_str().unwrap()))];
    p.extend(extra.iter().cloned());
    harness(&p)
}

fn with_edge(e: &Background, extra: &[(&str, glib::Value)]) -> H {
    let mut p = vec![("edge-url", v(e.url()))];
    p.extend(extra.iter().cloned());
    local(&p)
}

#[derive(Debug)]
struct R {
    label: String,
    class_id: i32,
    source: String,
    hit: bool,
    submodel: i32,
    degraded: bool,
    entropy: f64,
}

impl H {
    fn push(&mut self, value: u8) -> R {
        let mut buf = gst::Buffer::from_mut_slice(vec![value; 16 * 16]);
        buf.get_mut()
            .unwrap()
            .set_pts(gst::ClockTime::from_mseconds(33));
        let out = self.h.push_and_pull(buf).unwrap();
        let roi = out
            .meta::<gst_video::VideoRegionOfInterestMeta>()
            .expect("a ROI meta on every buffer");
        assert_eq!(roi.roi_type(), "cachenet");
        assert_eq!(roi.rect(), (0, 0, 16, 16));
        let s = roi
            .param("cachenet/classification")
            .expect("the classification param");
        let typed = gstcachenet::result::Classification::from_buffer(&out).unwrap();
        let rust = out
            .meta::<gstcachenet::meta::CacheNetMeta>()
            .expect("the Rust meta");
        assert_eq!(rust.result().label, typed.label);
        assert_eq!(rust.result().class_id, typed.class_id);
        assert_eq!(rust.result().source.as_str(), typed.source);
        assert_eq!(typed.label, s.get::<String>("label").unwrap());
        assert_eq!(
            (typed.hit, typed.submodel),
            (s.get("hit").unwrap(), s.get("submodel").unwrap())
        );
        R {
            label: s.get("label").unwrap(),
            class_id: s.get("class-id").unwrap(),
            source: s.get("source").unwrap(),
            hit: s.get("hit").unwrap(),
            submodel: s.get("submodel").unwrap(),
            degraded: s.get("degraded").unwrap(),
            entropy: s.get("entropy").unwrap(),
        }
    }

    /// Push dark frames (hits on submodel 0) until the prefetch of submodel 1 has ended: it
    /// runs at frame boundaries.
    fn until_prefetched(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.stat::<u64>("prefetches") == 0 {
            assert!(Instant::now() < deadline, "the prefetch never ended");
            assert!(self.push(20).hit);
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Wait until the swap worker has no work left: the next frame finds the swapped submodel.
    fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.el.property::<u32>("swaps-pending") > 0 {
            assert!(Instant::now() < deadline, "the swap never finished");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn stat<T: for<'a> glib::value::FromValue<'a> + 'static>(&self, name: &str) -> T {
        self.el
            .property::<gst::Structure>("stats")
            .get(name)
            .unwrap()
    }

    fn messages(&self, name: &str) -> Vec<gst::Structure> {
        let mut out = Vec::new();
        while let Some(m) = self.bus.pop() {
            match m.view() {
                gst::MessageView::Element(e) if e.structure().is_some_and(|s| s.name() == name) => {
                    out.push(e.structure().unwrap().to_owned())
                }
                gst::MessageView::Warning(w) if name == "warning" => out.push(
                    gst::Structure::builder("warning")
                        .field("text", w.error().to_string())
                        .build(),
                ),
                _ => {}
            }
        }
        out
    }
}

#[test]
fn hit_path_attaches_metadata_and_posts_results() {
    let mut h = local(&[]);
    let r = h.push(20);
    assert_eq!((r.label.as_str(), r.class_id), ("black", 0));
    assert_eq!(
        (r.source.as_str(), r.hit, r.submodel, r.degraded),
        ("device", true, 0, false)
    );
    assert!(r.entropy < 0.5);
    let msgs = h.messages("cachenet-result");
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert_eq!(m.get::<String>("label").unwrap(), "black");
    assert_eq!(m.get::<u64>("pts").unwrap(), 33_000_000);
    assert!(m.get::<u64>("latency-us").unwrap() > 0);
    assert_eq!(h.stat::<u64>("frames"), 1);
    assert_eq!(h.stat::<u64>("hits"), 1);
    assert_eq!(h.stat::<f64>("hit-rate"), 1.0);
    assert_eq!(h.stat::<i32>("active-submodel"), 0);
}

/// A 16x16 GRAY8 frame of `value` with rows padded to 20 bytes as a video meta describes them,
/// the last row unpadded, and `cut` bytes short of that.
fn padded_frame(value: u8, cut: usize) -> gst::Buffer {
    let size = 20 * 15 + 16 - cut;
    let mut buf = gst::Buffer::from_mut_slice(vec![value; size]);
    gst_video::VideoMeta::add_full(
        buf.get_mut().unwrap(),
        gst_video::VideoFrameFlags::empty(),
        gst_video::VideoFormat::Gray8,
        16,
        16,
        &[0],
        &[20],
    )
    .unwrap();
    buf
}

#[test]
fn padded_rows_from_a_video_meta_are_read_and_a_short_buffer_is_an_error() {
    let mut h = local(&[]);
    let plain = h.push(240);
    // Padded rows, the last one unpadded (as a driver may hand them out): the same answer.
    let out = h.h.push_and_pull(padded_frame(240, 0)).unwrap();
    let padded = gstcachenet::result::Classification::from_buffer(&out).unwrap();
    assert_eq!(
        (padded.class_id, padded.label.as_str()),
        (plain.class_id, plain.label.as_str())
    );
    assert!((padded.entropy - plain.entropy).abs() < 1e-6);
    // One byte short of its last row: refused with an error that says why, nothing read past
    // the buffer.
    assert_eq!(h.h.push(padded_frame(240, 1)), Err(gst::FlowError::Error));
    let error = std::iter::from_fn(|| h.bus.pop())
        .find_map(|m| match m.view() {
            gst::MessageView::Error(e) => Some(format!("{} {:?}", e.error(), e.debug())),
            _ => None,
        })
        .expect("an error message");
    assert!(
        error.contains("does not fit in a buffer of 315 bytes"),
        "{error}"
    );
}

#[test]
fn post_messages_false_posts_nothing() {
    let mut h = local(&[("post-messages", v(false))]);
    h.push(20);
    assert!(h.messages("cachenet-result").is_empty());
}

#[test]
fn an_unread_bus_holds_a_bounded_number_of_messages() {
    let mut h = local(&[("max-pending-messages", v(5u32))]);
    for _ in 0..8 {
        h.push(20);
    }
    assert_eq!(h.stat::<u64>("messages-dropped"), 3);
    let warnings = h.messages("warning");
    assert_eq!(warnings.len(), 1, "one warning per streak: {warnings:?}");
    // messages() read the bus: the next results are posted again.
    h.push(20);
    h.push(20);
    assert_eq!(h.messages("cachenet-result").len(), 2);
    assert_eq!(h.stat::<u64>("messages-dropped"), 3);
}

#[test]
fn miss_without_edge_keeps_the_local_answer() {
    let mut h = local(&[]);
    let r = h.push(240); // submodel 0 is unsure about bright frames (H = ln 2 >= 0.5)
    assert_eq!(
        (r.source.as_str(), r.hit, r.degraded, r.submodel),
        ("device", false, false, 0)
    );
    assert!(r.entropy >= 0.5);
    assert_eq!(h.stat::<u64>("misses"), 1);
    // threshold above ln 2: the same frame is a hit
    let mut h = local(&[("threshold", v(0.7f32))]);
    assert!(h.push(240).hit);
}

#[test]
fn miss_offloads_swaps_and_evicts_with_lru() {
    let e = edge();
    let mut h = with_edge(&e, &[]);
    assert!(h.push(20).hit);
    let r = h.push(240);
    assert_eq!(
        (r.label.as_str(), r.class_id, r.source.as_str()),
        ("white", 3, "edge")
    );
    assert_eq!((r.hit, r.submodel, r.degraded), (false, 1, false));
    h.settle();
    let r = h.push(240);
    assert_eq!(
        (r.source.as_str(), r.hit, r.submodel, r.class_id),
        ("device", true, 1, 3)
    );
    assert_eq!(h.stat::<u64>("fetches"), 1);
    let r = h.push(20); // submodel 1 is unsure about dark frames -> miss, submodel 0 comes back
    assert_eq!((r.source.as_str(), r.submodel), ("edge", 0));
    assert!(h.push(20).hit, "a kept compiled plan is active at once");
    assert_eq!(h.stat::<u64>("misses"), 2);
    assert_eq!(h.stat::<u64>("offloads"), 2);
    assert_eq!(h.stat::<u64>("swaps"), 2);
    assert_eq!(h.stat::<u64>("evictions"), 2);
    assert_eq!(
        (h.stat::<u64>("fetches"), h.stat::<u64>("plan-reuses")),
        (1, 1),
        "submodel 0 came back from its kept compiled plan"
    );
    assert!(h.stat::<u64>("bytes-down") > 1000, "submodel 1 downloaded");
    assert!(h.stat::<u64>("bytes-up") > 128);
    assert!(h.stat::<u64>("edge-time-us") > 0);
}

#[test]
fn larger_cache_keeps_both_submodels() {
    let e = edge();
    let mut h = with_edge(&e, &[("cache-size", v(2u32))]);
    h.push(20);
    h.push(240); // miss: submodel 1 joins submodel 0
    h.settle();
    let r = h.push(20); // submodel 1 unsure, submodel 0 (cached) is sure: a hit, no offload
    assert_eq!((r.source.as_str(), r.hit, r.submodel), ("device", true, 0));
    assert!(h.push(240).hit);
    assert_eq!(h.stat::<u64>("misses"), 1);
    assert_eq!(h.stat::<u64>("evictions"), 0);
    assert_eq!(h.stat::<u64>("swaps"), 3);
}

/// Appendix A.2: on the same frame sequence, misses never increase when cache-size grows.
#[test]
fn no_belady_anomaly_when_the_cache_grows() {
    let e = edge();
    let mut x: u64 = 0x9E3779B97F4A7C15;
    for _ in 0..6 {
        let seq: Vec<u8> = (0..24)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                [20u8, 100, 180, 240][(x % 4) as usize]
            })
            .collect();
        let misses: Vec<u64> = [1u32, 2]
            .iter()
            .map(|&c| {
                // keep-compiled=false and a settled swap after every frame: the count is
                // that of the LRU policy alone.
                let mut h = with_edge(&e, &[("cache-size", v(c)), ("keep-compiled", v(false))]);
                seq.iter().for_each(|&f| {
                    h.push(f);
                    h.settle();
                });
                h.stat::<u64>("misses")
            })
            .collect();
        assert!(misses[1] <= misses[0], "{seq:?}: {misses:?}");
    }
}

#[test]
fn device_and_edge_modes() {
    let e = edge();
    let mut h = with_edge(&e, &[("mode", v("device"))]);
    for (value, class) in [(20u8, 0), (100, 1), (180, 2), (240, 3)] {
        let r = h.push(value);
        assert_eq!(
            (r.class_id, r.source.as_str(), r.submodel, r.hit),
            (class, "device", -1, false)
        );
    }
    assert_eq!(h.stat::<u64>("offloads"), 0);

    let mut h = with_edge(&e, &[("mode", v("edge"))]);
    for (value, class) in [(20u8, 0), (240, 3), (20, 0)] {
        let r = h.push(value);
        assert_eq!((r.class_id, r.source.as_str()), (class, "edge"));
    }
    assert_eq!(h.stat::<u64>("offloads"), 3);
    assert!(
        h.stat::<u64>("bytes-down") < 1500,
        "edge mode downloads no submodel"
    );
}

#[test]
fn async_offload_leaves_at_once_and_swaps_later() {
    let e = edge();
    let mut h = with_edge(&e, &[("offload", v("async"))]);
    let r = h.push(240);
    assert_eq!((r.source.as_str(), r.hit, r.submodel), ("device", false, 0));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let r = h.push(240);
        if r.hit {
            assert_eq!(r.submodel, 1);
            break;
        }
        assert!(Instant::now() < deadline, "the async swap never happened");
    }
    assert_eq!(
        h.stat::<u64>("offloads"),
        1,
        "at most one request in flight, none while its submodel downloads"
    );
    assert_eq!(h.stat::<u64>("swaps"), 1);
}

/// A server that accepts connections and never answers.
fn black_hole() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    (l, url)
}

#[test]
fn edge_timeout_degrades_with_a_warning_and_backs_off() {
    let (_l, url) = black_hole();
    let mut h = local(&[("edge-url", v(url)), ("timeout-ms", v(200u32))]);
    let t = Instant::now();
    let r = h.push(240);
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "bounded by timeout-ms"
    );
    assert_eq!(
        (r.source.as_str(), r.degraded, r.submodel),
        ("device", true, 0)
    );
    let r = h.push(240); // backing off: no new request
    assert!(r.degraded);
    assert_eq!(h.stat::<u64>("offloads"), 1, "no request while backing off");
    assert_eq!(h.stat::<u64>("offload-failures"), 1);
    let w = h.messages("warning");
    assert_eq!(w.len(), 1, "one warning per failure streak");
    assert!(
        w[0].get::<String>("text")
            .unwrap()
            .contains("edge offload failed")
    );
}

/// The device and the edge see the same pixels: an RGB camera frame offloaded by the element
/// (scaled on the device, sent raw) and the same frame sent as a PNG (decoded and scaled by the
/// edge) get the same answer from the edge's full model, to the last bit of the entropy.
#[test]
fn device_and_edge_scale_a_frame_alike() {
    let e = edge();
    let mut h = with_edge(&e, &[("mode", v("edge"))]);
    let (w, hgt) = (97u32, 61u32);
    let caps = format!("video/x-raw,format=RGB,width={w},height={hgt},framerate=30/1");
    h.h.set_src_caps_str(&caps);
    let mut seed = 5u32;
    let row = (w * 3).next_multiple_of(4) as usize; // GStreamer's RGB rows are 4-byte aligned
    let mut frame = vec![0u8; row * hgt as usize];
    for y in 0..hgt as usize {
        for b in &mut frame[y * row..y * row + (w * 3) as usize] {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            *b = (seed >> 16) as u8;
        }
    }
    let out =
        h.h.push_and_pull(gst::Buffer::from_slice(frame.clone()))
            .unwrap();
    let device = gstcachenet::result::Classification::from_buffer(&out).unwrap();
    assert_eq!(device.source, "edge");
    // The same frame as a PNG, straight to the edge.
    let packed: Vec<u8> = frame
        .chunks(row)
        .flat_map(|r| &r[..(w * 3) as usize])
        .copied()
        .collect();
    let mut png = Vec::new();
    image::RgbImage::from_raw(w, hgt, packed)
        .unwrap()
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let client = gstcachenet::edge::EdgeClient::new(
        &e.url(),
        "tiny",
        None,
        Duration::from_secs(10),
        None,
        "camera",
    )
    .unwrap();
    let (answer, _) = client
        .infer(&proto::InferRequest {
            api_version: proto::API_VERSION,
            request_id: "png".into(),
            image: Some(proto::infer_request::Image::Encoded(png)),
            cached_submodels: vec![],
            audited_submodel: None,
        })
        .unwrap();
    assert_eq!(device.class_id, answer.class_id as i32);
    assert_eq!(device.entropy, answer.entropy as f64, "different pixels");
}

/// A token the edge does not accept is a settings error on the bus, reported once, never
/// retried; frames keep their local results.
#[test]
fn refused_token_is_a_settings_error_not_an_outage() {
    let state = AppState::load(Config {
        model_dirs: vec![tiny()],
        token: Some("right".into()),
        ..Config::default()
    })
    .unwrap();
    let e = Background::start(state, "127.0.0.1:0").unwrap();
    let mut h = with_edge(&e, &[("token", v("wrong"))]);
    for _ in 0..3 {
        let r = h.push(240);
        assert_eq!(
            (r.source.as_str(), r.degraded, r.submodel),
            ("device", true, 0)
        );
    }
    assert_eq!(h.stat::<u64>("offloads"), 1, "no request after the refusal");
    assert_eq!(h.stat::<u64>("offload-failures"), 1);
    let mut errors = Vec::new();
    while let Some(m) = h.bus.pop() {
        if let gst::MessageView::Error(err) = m.view() {
            assert!(err.error().matches(gst::ResourceError::NotAuthorized));
            errors.push(err.error().to_string());
        }
    }
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("refused the token") && errors[0].contains("401"),
        "{errors:?}"
    );
    // The right token works.
    let mut h = with_edge(&e, &[("token", v("right"))]);
    let r = h.push(240);
    assert_eq!((r.source.as_str(), r.degraded), ("edge", false));
}

/// The token is write-only: no property read shows it, so neither does a DOT graph (which
/// prints every readable property) or `gst-inspect`; a run with the element's debug log at its
/// most verbose, against an edge, never prints it.
#[test]
fn token_is_write_only_and_never_logged() {
    const TOKEN: &str = "tok-5ecret-4f1c";
    let state = AppState::load(Config {
        model_dirs: vec![tiny()],
        token: Some(TOKEN.into()),
        ..Config::default()
    })
    .unwrap();
    let e = Background::start(state, "127.0.0.1:0").unwrap();
    init();
    let logged = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = logged.clone();
    // Captured, not printed (the default printer would fill the other tests' output).
    gst::log::remove_default_log_function();
    gst::log::set_active(true);
    gst::log::set_threshold_for_name("cachenetclassify", gst::DebugLevel::Memdump);
    let log = gst::log::add_log_function(move |_cat, _level, _file, _func, _line, _obj, msg| {
        if let Some(m) = msg.get() {
            sink.lock().unwrap().push(m.to_string());
        }
    });
    let el = gst::ElementFactory::make("cachenetclassify")
        .property("token", TOKEN)
        .build()
        .unwrap();
    let pspec = el.find_property("token").unwrap();
    assert!(pspec.flags().contains(glib::ParamFlags::WRITABLE));
    assert!(
        !pspec.flags().contains(glib::ParamFlags::READABLE),
        "token must be write-only"
    );
    let pipeline = gst::Pipeline::new();
    pipeline.add(&el).unwrap();
    let dot = pipeline.debug_to_dot_data(gst::DebugGraphDetails::all());
    assert!(!dot.contains(TOKEN), "the DOT graph shows the token");
    // A whole run with the token: start (manifest), a miss offloaded, a swap.
    let mut h = with_edge(&e, &[("token", v(TOKEN))]);
    let r = h.push(240);
    assert_eq!((r.source.as_str(), r.degraded), ("edge", false));
    h.settle();
    h.push(240);
    drop(h);
    gst::log::remove_log_function(log);
    gst::log::set_threshold_for_name("cachenetclassify", gst::DebugLevel::None);
    let logged = logged.lock().unwrap();
    assert!(
        logged.iter().any(|m| m.contains("model set")),
        "the debug log was not captured"
    );
    assert!(
        !logged.iter().any(|m| m.contains(TOKEN)),
        "the token was logged"
    );
}

/// An https:// edge with a private CA: with ca-file the element offloads and swaps over TLS;
/// without it the certificate is refused and frames keep their local results.
#[test]
fn https_edge_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let files = cachenet_edge::listen::make_certs(dir.path(), &["localhost".into()]).unwrap();
    let state = AppState::load(Config {
        model_dirs: vec![tiny()],
        tls: Some(cachenet_edge::listen::tls_config(&files.cert, &files.key).unwrap()),
        ..Config::default()
    })
    .unwrap();
    let e = Background::start(state, "127.0.0.1:0").unwrap();
    assert!(e.url().starts_with("https://"));
    let ca = files.ca.to_str().unwrap();
    let mut h = with_edge(&e, &[("ca-file", v(ca))]);
    let r = h.push(240);
    assert_eq!(
        (r.source.as_str(), r.class_id, r.degraded),
        ("edge", 3, false)
    );
    h.settle();
    let r = h.push(240);
    assert_eq!((r.source.as_str(), r.hit, r.submodel), ("device", true, 1));

    let mut h = with_edge(&e, &[("timeout-ms", v(2000u32))]);
    let r = h.push(240);
    assert_eq!((r.source.as_str(), r.degraded), ("device", true));
    let w = h.messages("warning");
    assert!(
        w.iter().any(|m| m
            .get::<String>("text")
            .unwrap()
            .to_lowercase()
            .contains("certificate")),
        "{w:?}"
    );
}

/// What a scripted fake edge does: /infer answers "white, submodel 1" after `infer_delay`;
/// /submodels/1 sends `submodel` (ONNX bytes) after `download_delay`.
#[derive(Default)]
struct Script {
    submodel: Vec<u8>,
    infer_delay: Duration,
    download_delay: Duration,
    /// The first this many infer requests get a 200 with a body that is not an InferResponse.
    junk_answers: usize,
    infer_calls: std::sync::atomic::AtomicUsize,
    /// Submodel downloads asked for (counted when the request arrives).
    downloads: std::sync::atomic::AtomicUsize,
    /// While set, the first infer answer waits until the test sends on its pair.
    hold_first: std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    /// Infer answers after the first select submodel 0 (the first selects submodel 1).
    later_select_zero: bool,
    /// Infer answers written.
    answers: std::sync::atomic::AtomicUsize,
    /// While set, the first download waits until the test sends on its pair (a minute at most).
    hold_download: std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

fn serve(mut c: std::net::TcpStream, shas: &[String; 2], script: &Script) {
    let Some((line, _)) = http::read_request(&c) else {
        return;
    };
    let call = line.contains("/infer").then(|| {
        script
            .infer_calls
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    });
    let junk = call.is_some_and(|n| n < script.junk_answers);
    let resp = if junk {
        b"\x00\xffnot protobuf at all".to_vec()
    } else if let Some(n) = call {
        if n == 0 {
            let held = script.hold_first.lock().unwrap().take();
            if let Some(release) = held {
                let _ = release.recv();
            }
        }
        std::thread::sleep(script.infer_delay);
        let sub = if n > 0 && script.later_select_zero {
            0
        } else {
            1
        };
        proto::InferResponse {
            class_id: 3,
            label: "white".into(),
            probabilities: vec![0.0, 0.0, 0.0, 1.0],
            submodel_id: sub as u32,
            submodel_sha256: shas[sub].clone(),
            ..Default::default()
        }
        .encode_to_vec()
    } else {
        script
            .downloads
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let held = script.hold_download.lock().unwrap().take();
        if let Some(release) = held {
            let _ = release.recv_timeout(Duration::from_secs(60));
        }
        std::thread::sleep(script.download_delay);
        proto::Submodel {
            id: 1,
            sha256: shas[1].clone(),
            onnx: script.submodel.clone(),
        }
        .encode_to_vec()
    };
    http::write_ok(&mut c, &resp);
    if call.is_some() {
        script
            .answers
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A fake edge following `script`, one thread per connection, for the life of the test.
fn scripted_edge(script: Script) -> String {
    scripted_edge_shared(std::sync::Arc::new(script))
}

/// [`scripted_edge`], the script shared with the test (its counters are the edge's events).
fn scripted_edge_shared(script: std::sync::Arc<Script>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tiny().join("manifest.json")).unwrap()).unwrap();
    let sha = |i: usize| {
        manifest["submodels"][i]["sha256"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let shas = [sha(0), sha(1)];
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(c) = c else { return };
            let (shas, script) = (shas.clone(), script.clone());
            std::thread::spawn(move || serve(c, &shas, &script));
        }
    });
    url
}

fn real_submodel_1() -> Vec<u8> {
    std::fs::read(tiny().join("submodel-1.onnx")).unwrap()
}

#[test]
fn corrupt_submodel_download_is_rejected_and_the_old_model_kept() {
    let url = scripted_edge(Script {
        submodel: b"corrupt bytes".to_vec(),
        infer_delay: Duration::ZERO,
        download_delay: Duration::ZERO,
        ..Default::default()
    });
    let mut h = local(&[("edge-url", v(url))]);
    // The edge answers the frame; the download of the submodel it selects fails verification
    // on the swap worker, and the frames after it keep submodel 0.
    let r = h.push(240);
    assert_eq!((r.source.as_str(), r.degraded), ("edge", false));
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.stat::<u64>("offload-failures") == 0 {
        assert!(Instant::now() < deadline, "the download was never rejected");
        std::thread::sleep(Duration::from_millis(20));
        h.push(20);
    }
    assert_eq!(h.stat::<i32>("active-submodel"), 0);
    assert_eq!(h.stat::<u64>("fetches"), 0);
    let w = h.messages("warning");
    assert!(
        w[0].get::<String>("text").unwrap().contains("rejected"),
        "{w:?}"
    );
    assert!(h.push(20).hit, "submodel 0 still works");
}

/// A slow download never holds a frame: the miss waits only for the edge's answer, the frames
/// after it keep the old submodel until the new one is compiled, then it is active.
#[test]
fn no_frame_waits_for_a_download_or_a_compile() {
    let (release, held) = std::sync::mpsc::channel();
    let script = std::sync::Arc::new(Script {
        submodel: real_submodel_1(),
        hold_download: std::sync::Mutex::new(Some(held)),
        ..Default::default()
    });
    let url = scripted_edge_shared(script.clone());
    let mut h = local(&[("edge-url", v(url)), ("timeout-ms", v(60_000u32))]);
    // The download is held by the edge until the test lets it go: every frame before that
    // returns without it.
    let r = h.push(240);
    assert_eq!((r.source.as_str(), r.submodel), ("edge", 1));
    wait_for(&script.downloads, 1, "the download");
    assert_eq!(h.el.property::<u32>("swaps-pending"), 1);
    let r = h.push(20); // submodel 0 is still active while 1 downloads
    assert!(r.hit && r.submodel == 0);
    assert_eq!(h.el.property::<u32>("swaps-pending"), 1, "still held");
    release.send(()).unwrap();
    h.settle();
    let r = h.push(240);
    assert_eq!((r.hit, r.submodel), (true, 1));
    let phases: u64 = ["download", "verify", "parse", "optimise", "first-run"]
        .iter()
        .map(|p| h.stat::<u64>(&format!("swap-{p}-us")))
        .sum();
    assert!(h.stat::<u64>("swap-download-us") > 0);
    assert!(phases >= h.stat::<u64>("swap-download-us"));
    // The device's CPU time for the work after the download: some, and no more than its wall
    // clock (1 ms for the clocks' rounding).
    let work: u64 = ["verify", "store", "parse", "optimise", "first-run"]
        .iter()
        .map(|p| h.stat::<u64>(&format!("swap-{p}-us")))
        .sum();
    let cpu = h.stat::<u64>("swap-cpu-us");
    assert!(
        cpu > 0 && cpu <= work + 1000,
        "cpu {cpu} us, work {work} us"
    );
    let swaps = h.messages("cachenet-swap");
    assert_eq!(swaps.len(), 1);
    assert_eq!(swaps[0].get::<u32>("submodel").unwrap(), 1);
    assert!(swaps[0].get::<u64>("wait-us").unwrap() >= h.stat::<u64>("swap-download-us"));
}

/// A script whose first answer waits for the test (the sender releases it) and whose later
/// answers select submodel 0: an answer from before a flush would show as submodel 1.
fn held_script() -> (std::sync::Arc<Script>, std::sync::mpsc::Sender<()>) {
    let (release, held) = std::sync::mpsc::channel();
    let script = std::sync::Arc::new(Script {
        submodel: real_submodel_1(),
        hold_first: std::sync::Mutex::new(Some(held)),
        later_select_zero: true,
        ..Default::default()
    });
    (script, release)
}

/// A flush (seek) cuts a sync wait short and drops what was asked before it: the held answer,
/// released after the flush, is never taken for the next miss's.
#[test]
fn flush_cancels_the_wait_and_drops_earlier_answers() {
    let (script, release) = held_script();
    let url = scripted_edge_shared(script.clone());
    let mut h = local(&[("edge-url", v(url)), ("timeout-ms", v(60_000u32))]);
    let (el, s) = (h.el.clone(), script.clone());
    let flush = timed_when(
        move || wait_for(&s.infer_calls, 1, "the request"),
        move || {
            assert!(
                el.static_pad("sink")
                    .unwrap()
                    .send_event(gst::event::FlushStart::new())
            )
        },
    );
    let mut buf = gst::Buffer::from_mut_slice(vec![240u8; 16 * 16]);
    buf.get_mut().unwrap().set_pts(gst::ClockTime::ZERO);
    let _ = h.h.push(buf); // flushing: the buffer may be refused
    flush.join().unwrap();
    let pad = h.el.static_pad("sink").unwrap();
    assert!(pad.send_event(gst::event::FlushStop::new(true)));
    h.h.set_src_caps_str("video/x-raw,format=GRAY8,width=16,height=16,framerate=30/1");
    // The frame that was waiting may have left before the flush reached the harness's sink.
    while h.h.try_pull().is_some() {}
    // The answer to the request from before the flush reaches the element (its worker reads
    // answers in order): the next miss's answer is its own (submodel 0), nothing is fetched.
    release.send(()).unwrap();
    wait_for(&script.answers, 1, "the held answer");
    let r = h.push(240);
    assert_eq!((r.source.as_str(), r.submodel), ("edge", 0));
    assert_eq!(script.answers.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert!(h.push(20).hit);
    assert_eq!(h.stat::<u64>("fetches"), 0);
    assert_eq!(h.el.property::<u32>("swaps-pending"), 0);
    assert_eq!(
        h.stat::<u64>("offload-failures"),
        0,
        "a flush is not an edge failure"
    );
}

/// In async mode an answer asked for before a flush does not swap after it: the held answer
/// (submodel 1) arrives after the flush, before the answer to the next request (submodel 0),
/// which is applied; submodel 1 is never fetched.
#[test]
fn async_answer_from_before_a_flush_is_dropped() {
    let (script, release) = held_script();
    let url = scripted_edge_shared(script.clone());
    let mut h = local(&[("edge-url", v(url)), ("offload", v("async"))]);
    let r = h.push(240);
    assert_eq!((r.source.as_str(), r.submodel), ("device", 0));
    wait_for(&script.infer_calls, 1, "the request");
    let pad = h.el.static_pad("sink").unwrap();
    assert!(pad.send_event(gst::event::FlushStart::new()));
    assert!(pad.send_event(gst::event::FlushStop::new(true)));
    h.h.set_src_caps_str("video/x-raw,format=GRAY8,width=16,height=16,framerate=30/1");
    // The frame that was waiting may have left before the flush reached the harness's sink.
    while h.h.try_pull().is_some() {}
    release.send(()).unwrap();
    wait_for(&script.answers, 1, "the held answer");
    // Misses until a second request has been answered and applied (bytes-down counts the
    // answers the element applies): the first answer reached the worker before it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while h.stat::<u64>("bytes-down") == 0 {
        assert!(Instant::now() < deadline, "no answer was ever applied");
        h.push(240);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(script.answers.load(std::sync::atomic::Ordering::SeqCst) >= 2);
    assert!(h.push(20).hit);
    assert_eq!(h.stat::<u64>("fetches"), 0);
    assert_eq!(h.el.property::<u32>("swaps-pending"), 0);
    assert_eq!(h.stat::<i32>("active-submodel"), 0);
}

/// Waits until `count` reaches `n` (an event of the scripted edge).
fn wait_for(count: &std::sync::atomic::AtomicUsize, n: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while count.load(std::sync::atomic::Ordering::SeqCst) < n {
        assert!(Instant::now() < deadline, "{what} never happened");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// How long `f` takes, run on another thread once `ready` holds: the test's thread meanwhile
/// pushes a frame that waits on the edge.
fn timed_when(
    ready: impl FnOnce() + Send + 'static,
    f: impl FnOnce() + Send + 'static,
) -> std::thread::JoinHandle<Duration> {
    std::thread::spawn(move || {
        ready();
        let t = Instant::now();
        f();
        t.elapsed()
    })
}

/// A flush and a stop while a sync request is in flight (the edge holds it for a minute,
/// `timeout-ms` is a minute): each returns at once; the request is abandoned, its answer
/// never used, and the frames after the flush run locally.
#[test]
fn flush_and_stop_do_not_wait_for_a_request_in_flight() {
    let script = std::sync::Arc::new(Script {
        submodel: real_submodel_1(),
        infer_delay: Duration::from_secs(60),
        ..Default::default()
    });
    let url = scripted_edge_shared(script.clone());
    let mut h = local(&[("edge-url", v(&url)), ("timeout-ms", v(60_000u32))]);
    let (el, s) = (h.el.clone(), script.clone());
    let flush = timed_when(
        move || wait_for(&s.infer_calls, 1, "the request"),
        move || {
            assert!(
                el.static_pad("sink")
                    .unwrap()
                    .send_event(gst::event::FlushStart::new())
            )
        },
    );
    let mut buf = gst::Buffer::from_mut_slice(vec![240u8; 16 * 16]);
    buf.get_mut().unwrap().set_pts(gst::ClockTime::ZERO);
    let t = Instant::now();
    let _ = h.h.push(buf); // flushing: the buffer may be refused
    let pushed = t.elapsed();
    let flushed = flush.join().unwrap();
    println!("flush returned in {flushed:?}, the waiting push in {pushed:?}");
    assert!(
        pushed < Duration::from_secs(30),
        "the flush did not end the wait"
    );
    assert!(flushed < Duration::from_millis(500), "{flushed:?}");
    let pad = h.el.static_pad("sink").unwrap();
    assert!(pad.send_event(gst::event::FlushStop::new(true)));
    h.h.set_src_caps_str("video/x-raw,format=GRAY8,width=16,height=16,framerate=30/1");
    // The frame that was waiting may have left before the flush reached the harness's sink.
    while h.h.try_pull().is_some() {}
    let r = h.push(20);
    assert!(r.hit && r.submodel == 0);
    assert_eq!(
        h.stat::<u64>("offload-failures"),
        0,
        "a flush is not an edge failure"
    );
    drop(h);
    // Another element's miss: stop it while its request is in flight.
    let mut h = local(&[("edge-url", v(url)), ("timeout-ms", v(60_000u32))]);
    let (el, s) = (h.el.clone(), script.clone());
    let stop = timed_when(
        move || wait_for(&s.infer_calls, 2, "the second request"),
        move || {
            el.set_state(gst::State::Null).unwrap();
        },
    );
    let mut buf = gst::Buffer::from_mut_slice(vec![240u8; 16 * 16]);
    buf.get_mut()
        .unwrap()
        .set_pts(gst::ClockTime::from_mseconds(33));
    let _ = h.h.push(buf);
    let stopped = stop.join().unwrap();
    println!("stop returned in {stopped:?}");
    assert!(
        stopped < Duration::from_millis(500),
        "stop waited: {stopped:?}"
    );
    assert_eq!(
        script.downloads.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

/// A stop while a submodel download is in flight (the edge sends it after a minute,
/// `timeout-ms` is a minute) returns at once: the download is abandoned.
#[test]
fn stop_does_not_wait_for_a_download_in_flight() {
    let script = std::sync::Arc::new(Script {
        submodel: real_submodel_1(),
        download_delay: Duration::from_secs(60),
        ..Default::default()
    });
    let url = scripted_edge_shared(script.clone());
    let mut h = local(&[("edge-url", v(url)), ("timeout-ms", v(60_000u32))]);
    let r = h.push(240);
    assert_eq!((r.source.as_str(), r.submodel), ("edge", 1));
    wait_for(&script.downloads, 1, "the download");
    assert_eq!(h.el.property::<u32>("swaps-pending"), 1);
    let t = Instant::now();
    h.el.set_state(gst::State::Null).unwrap();
    let stopped = t.elapsed();
    println!("stop returned in {stopped:?}");
    assert!(
        stopped < Duration::from_millis(500),
        "stop waited: {stopped:?}"
    );
}

/// Prefetch (on): after start the element fetches and compiles the manifest's other submodel
/// in the background; the swap the edge asks for later reuses that plan (no download, no
/// compile on the miss). With cache-dir the prefetched file is kept too. A stream that misses
/// before the prefetch ends gets its swap all the same.
#[test]
fn prefetch_fetches_the_other_submodels_ahead_of_the_first_miss() {
    let script = std::sync::Arc::new(Script {
        submodel: real_submodel_1(),
        ..Default::default()
    });
    let url = scripted_edge_shared(script.clone());
    let dir = tempfile::tempdir().unwrap();
    let mut h = local(&[
        ("edge-url", v(&url)),
        ("prefetch", v(true)),
        ("cache-dir", v(dir.path().to_str().unwrap())),
    ]);
    // Frames that hit: the prefetch runs at frame boundaries until submodel 1 is compiled.
    h.until_prefetched();
    assert_eq!(
        script.downloads.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    assert_eq!(h.el.property::<u32>("swaps-pending"), 0, "not a swap");
    let stored = std::fs::read_dir(dir.path().join("tiny")).unwrap().count();
    assert!(stored >= 1, "the prefetched file is kept in cache-dir");
    // The miss: submodel 1 is active at once, from the prefetched plan.
    let r = h.push(240);
    assert_eq!((r.source.as_str(), r.submodel), ("edge", 1));
    assert!(h.push(240).hit);
    assert_eq!(h.stat::<u64>("plan-reuses"), 1);
    assert_eq!(h.stat::<u64>("fetches"), 0);
    assert_eq!(
        script.downloads.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    // Off: the same miss downloads and compiles on the swap worker.
    let mut h = local(&[("edge-url", v(&url)), ("prefetch", v(false))]);
    for _ in 0..5 {
        assert!(h.push(20).hit);
    }
    assert_eq!(h.stat::<u64>("prefetches"), 0);
    assert_eq!(
        script.downloads.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    let r = h.push(240);
    assert_eq!((r.source.as_str(), r.submodel), ("edge", 1));
    h.settle();
    assert!(h.push(240).hit);
    assert_eq!(h.stat::<u64>("fetches"), 1);
    assert_eq!(
        script.downloads.load(std::sync::atomic::Ordering::SeqCst),
        2
    );
}

/// With `offload=async` a miss tries the kept compiled plans (here the prefetched submodel 1)
/// before answering locally: a confident one answers the frame as a hit and becomes active, no
/// request goes to the edge. With `offload=sync` the same miss goes to the edge.
#[test]
fn an_async_miss_tries_the_kept_plans_first() {
    let script = std::sync::Arc::new(Script {
        submodel: real_submodel_1(),
        ..Default::default()
    });
    let url = scripted_edge_shared(script.clone());
    for offload in ["async", "sync"] {
        let mut h = local(&[
            ("edge-url", v(&url)),
            ("prefetch", v(true)),
            ("offload", v(offload)),
        ]);
        h.until_prefetched();
        let calls = script.infer_calls.load(std::sync::atomic::Ordering::SeqCst);
        let r = h.push(240);
        if offload == "async" {
            assert_eq!((r.source.as_str(), r.hit, r.submodel), ("device", true, 1));
            assert_eq!(h.stat::<u64>("offloads"), 0);
            assert_eq!(
                script.infer_calls.load(std::sync::atomic::Ordering::SeqCst),
                calls
            );
        } else {
            assert_eq!((r.source.as_str(), r.submodel), ("edge", 1));
            assert_eq!(h.stat::<u64>("offloads"), 1);
        }
        assert_eq!(h.stat::<u64>("plan-reuses"), 1);
        assert!(h.push(240).hit);
        assert_eq!(h.stat::<i32>("active-submodel"), 1);
    }
}

/// A swap the edge asks for while a prefetch of the same submodel is on its way waits for
/// that prefetch (no second download) and makes the submodel active when it lands.
#[test]
fn a_miss_during_the_prefetch_takes_the_prefetched_submodel() {
    let script = std::sync::Arc::new(Script {
        submodel: real_submodel_1(),
        download_delay: Duration::from_millis(300),
        ..Default::default()
    });
    let url = scripted_edge_shared(script.clone());
    let mut h = local(&[("edge-url", v(&url)), ("prefetch", v(true))]);
    assert!(h.push(20).hit); // the frame boundary that asks for the prefetch
    wait_for(&script.downloads, 1, "the prefetch download");
    let r = h.push(240);
    assert_eq!((r.source.as_str(), r.submodel), ("edge", 1));
    let deadline = Instant::now() + Duration::from_secs(30);
    while h.stat::<i32>("active-submodel") != 1 {
        assert!(
            Instant::now() < deadline,
            "the prefetched submodel never became active"
        );
        h.push(20);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        script.downloads.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    assert_eq!(h.stat::<u64>("prefetches"), 1);
    assert_eq!(h.messages("cachenet-swap").len(), 1);
}

#[test]
fn cache_dir_persists_submodels_across_restarts() {
    let e = edge();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().to_str().unwrap().to_string();
    {
        let mut h = harness(&[
            ("edge-url", v(e.url())),
            ("model-set", v("tiny")),
            ("cache-dir", v(cache.as_str())),
        ]);
        let r = h.push(240); // cold start: a miss
        assert_eq!((r.source.as_str(), r.submodel), ("edge", 1));
        h.settle();
        assert!(h.push(240).hit);
    }
    assert!(dir.path().join("tiny/manifest.json").exists());
    // Restart with the edge gone: the manifest and submodel 1 come from cache-dir.
    let (_l, dead) = black_hole();
    let mut h = harness(&[
        ("edge-url", v(dead)),
        ("model-set", v("tiny")),
        ("cache-dir", v(cache.as_str())),
        ("timeout-ms", v(200u32)),
    ]);
    let r = h.push(240);
    assert_eq!((r.source.as_str(), r.hit, r.submodel), ("device", true, 1));
    assert_eq!(h.stat::<u64>("bytes-down"), 0);
    // A corrupt cached file is ignored (and fetched again when needed).
    drop(h);
    for f in std::fs::read_dir(dir.path().join("tiny")).unwrap() {
        let p = f.unwrap().path();
        if p.extension().is_some_and(|e| e == "onnx") {
            std::fs::write(&p, b"garbage").unwrap();
        }
    }
    let mut h = harness(&[
        ("edge-url", v(e.url())),
        ("model-set", v("tiny")),
        ("cache-dir", v(cache.as_str())),
    ]);
    let r = h.push(240);
    assert_eq!((r.source.as_str(), r.submodel), ("edge", 1));
    h.settle();
    assert!(h.push(240).hit);
    assert!(h.stat::<u64>("bytes-down") > 1000);
}

/// The real edge process killed mid-stream, then started again on the same address: every frame
/// keeps getting a result while it is away (local, marked degraded, within timeout-ms), one
/// warning for the outage, and offloading resumes by itself.
#[test]
fn edge_process_killed_mid_stream_and_restarted() {
    let (edge, port) = process::start_edge(&tiny());
    let url = format!("http://127.0.0.1:{port}");
    let mut h = local(&[("edge-url", v(url)), ("timeout-ms", v(500u32))]);
    let r = h.push(240); // a miss the edge answers; submodel 1 is fetched
    assert_eq!((r.source.as_str(), r.degraded), ("edge", false));
    h.settle();
    assert!(h.push(240).hit);
    drop(edge);
    for _ in 0..5 {
        let t = Instant::now();
        let r = h.push(20); // submodel 1 is unsure about dark frames: misses, the edge is gone
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "bounded by timeout-ms"
        );
        assert_eq!((r.source.as_str(), r.degraded), ("device", true));
    }
    let w = h.messages("warning");
    assert_eq!(w.len(), 1, "one warning per outage: {w:?}");
    let _edge = process::start_edge_on(&tiny(), port);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = h.push(20);
        if r.source == "edge" {
            assert!(!r.degraded);
            break;
        }
        assert!(Instant::now() < deadline, "offloading never resumed");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An edge answering 200 with a body that is not an InferResponse: frames keep their local
/// results (degraded), one warning, and the edge's good answers are used again afterwards.
#[test]
fn garbage_answers_degrade_then_recover() {
    let url = scripted_edge(Script {
        submodel: real_submodel_1(),
        junk_answers: 2,
        ..Default::default()
    });
    let mut h = local(&[("edge-url", v(url))]);
    let r = h.push(240);
    assert_eq!((r.source.as_str(), r.degraded), ("device", true));
    let w = h.messages("warning");
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].get::<String>("text").unwrap().contains("malformed"),
        "{w:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let r = h.push(240);
        if r.source == "edge" {
            assert!(!r.degraded);
            break;
        }
        assert!(r.degraded);
        assert!(Instant::now() < deadline, "good answers were never used");
    }
    assert!(h.messages("warning").is_empty(), "one warning per streak");
}

/// A cache-dir that cannot be written (here a path under a regular file, which not even root
/// can write): a warning at start, and submodels are fetched and used all the same.
#[test]
fn unwritable_cache_dir_warns_and_still_swaps() {
    let e = edge();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let cache = file.join("cache");
    let mut h = harness(&[
        ("edge-url", v(e.url())),
        ("model-set", v("tiny")),
        ("cache-dir", v(cache.to_str().unwrap())),
    ]);
    let w = h.messages("warning");
    assert!(
        w.iter().any(|s| s
            .get::<String>("text")
            .unwrap()
            .contains("cannot be written")),
        "{w:?}"
    );
    let r = h.push(240);
    assert_eq!((r.source.as_str(), r.submodel), ("edge", 1));
    h.settle();
    assert!(h.push(240).hit);
}

/// cache-dir failing at run time (the set's folder replaced by a file after start: every write
/// fails, as on a full disk): the downloaded submodel is used anyway, with one warning.
#[test]
fn cache_dir_write_errors_at_run_time_keep_the_download_in_use() {
    let e = edge();
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(&[
        ("edge-url", v(e.url())),
        ("model-set", v("tiny")),
        ("cache-dir", v(dir.path().to_str().unwrap())),
    ]);
    let set = dir.path().join("tiny");
    std::fs::remove_dir_all(&set).unwrap();
    std::fs::write(&set, b"not a folder").unwrap();
    let r = h.push(240);
    assert_eq!((r.source.as_str(), r.submodel), ("edge", 1));
    h.settle();
    let r = h.push(240);
    assert!(r.hit && r.submodel == 1, "used though it could not be kept");
    let w: Vec<String> = h
        .messages("warning")
        .iter()
        .map(|s| s.get::<String>("text").unwrap())
        .collect();
    assert_eq!(
        w.iter().filter(|t| t.contains("not kept")).count(),
        1,
        "{w:?}"
    );
}

fn start_error(props: &[(&str, glib::Value)]) -> String {
    init();
    let el = gst::ElementFactory::make("cachenetclassify")
        .build()
        .unwrap();
    set_props(&el, props);
    let pipeline = gst::Pipeline::new();
    pipeline.add(&el).unwrap();
    assert!(pipeline.set_state(gst::State::Paused).is_err());
    let bus = pipeline.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(gst::ClockTime::from_seconds(5), &[gst::MessageType::Error])
        .expect("an error message");
    let _ = pipeline.set_state(gst::State::Null);
    match msg.view() {
        gst::MessageView::Error(e) => e.error().to_string(),
        _ => unreachable!(),
    }
}

/// A manifest-sha256 pin admits only the pinned model set, from model-dir or from the edge.
#[test]
fn manifest_pin_refuses_any_other_model_set() {
    let sha = cachenet_core::sha256_hex(&std::fs::read(tiny().join("manifest.json")).unwrap());
    let other = "0".repeat(64);
    // model-dir
    let mut h = local(&[("manifest-sha256", v(sha.as_str()))]);
    assert_eq!(h.push(20).class_id, 0);
    let e = start_error(&[
        ("model-dir", v(tiny().to_str().unwrap())),
        ("manifest-sha256", v(other.as_str())),
    ]);
    assert!(
        e.contains("model-dir") && e.contains("manifest-sha256") && e.contains(&sha),
        "{e}"
    );
    let e = start_error(&[
        ("model-dir", v(tiny().to_str().unwrap())),
        ("manifest-sha256", v("abc")),
    ]);
    assert!(e.contains("64 hex digits"), "{e}");
    // the edge's manifest (no model-dir)
    let edge = edge();
    let e = start_error(&[
        ("edge-url", v(edge.url())),
        ("model-set", v("tiny")),
        ("manifest-sha256", v(other.as_str())),
    ]);
    assert!(
        e.contains("edge-url") && e.contains("manifest-sha256"),
        "{e}"
    );
    let mut h = harness(&[
        ("edge-url", v(edge.url())),
        ("model-set", v("tiny")),
        ("manifest-sha256", v(sha.to_uppercase())),
    ]);
    let r = h.push(240);
    assert_eq!((r.source.as_str(), r.class_id), ("edge", 3));
}

#[test]
fn bad_settings_fail_start_with_a_clear_message() {
    let e = start_error(&[]);
    assert!(e.contains("model-dir") && e.contains("edge-url"), "{e}");
    let e = start_error(&[("model-dir", v("/nonexistent/set"))]);
    assert!(
        e.contains("model-dir") && e.contains("/nonexistent/set"),
        "{e}"
    );
    let e = start_error(&[
        ("model-dir", v(tiny().to_str().unwrap())),
        ("edge-url", v("ftp://x")),
    ]);
    assert!(e.contains("edge-url"), "{e}");
    let e = start_error(&[
        ("model-dir", v(tiny().to_str().unwrap())),
        ("mode", v("edge")),
    ]);
    assert!(e.contains("mode=edge"), "{e}");
    let (_l, dead) = black_hole();
    let e = start_error(&[
        ("edge-url", v(dead)),
        ("model-set", v("tiny")),
        ("timeout-ms", v(200u32)),
    ]);
    assert!(e.contains("edge-url") && e.contains("manifest"), "{e}");
    let corrupt = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(tiny()).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), corrupt.path().join(f.file_name())).unwrap();
    }
    // A device loads only what its mode runs: the full model in device mode, the first
    // submodel otherwise; each is checked against the manifest.
    std::fs::write(corrupt.path().join("full.onnx"), b"junk").unwrap();
    let dir = corrupt.path().to_str().unwrap();
    let e = start_error(&[("model-dir", v(dir)), ("mode", v("device"))]);
    assert!(e.contains("full.onnx"), "{e}");
    std::fs::write(corrupt.path().join("submodel-0.onnx"), b"junk").unwrap();
    let e = start_error(&[("model-dir", v(dir))]);
    assert!(e.contains("submodel-0.onnx"), "{e}");
}

/// A camera's model-dir needs only what its mode runs: without the full model (nor the other
/// submodels) the element classifies with the first submodel.
#[test]
fn model_dir_needs_only_what_the_mode_runs() {
    init();
    let dir = tempfile::tempdir().unwrap();
    for f in ["manifest.json", "submodel-0.onnx"] {
        std::fs::copy(tiny().join(f), dir.path().join(f)).unwrap();
    }
    let el = gst::ElementFactory::make("cachenetclassify")
        .property("model-dir", dir.path().to_str().unwrap())
        .property_from_str("mode", "submodel-only")
        .build()
        .unwrap();
    let mut h = gst_check::Harness::with_element(&el, Some("sink"), Some("src"));
    h.set_src_caps_str("video/x-raw,format=GRAY8,width=8,height=8,framerate=30/1");
    h.play();
    h.push(gst::Buffer::from_mut_slice(vec![20u8; 64])).unwrap();
    let out = h.pull().unwrap();
    let r = gstcachenet::result::Classification::from_buffer(&out).expect("a result");
    assert_eq!((r.source.as_str(), r.submodel), ("device", 0));
    assert!(r.class_id >= 0 && !r.degraded, "{r:?}");
    let e = start_error(&[
        ("model-dir", v(dir.path().to_str().unwrap())),
        ("mode", v("device")),
    ]);
    assert!(e.contains("full.onnx"), "{e}");
}

fn run_pipeline(desc: &str) -> (Vec<gst::Structure>, Option<String>) {
    init();
    let p = gst::parse::launch(desc).unwrap();
    p.set_state(gst::State::Playing).unwrap();
    let bus = p.bus().unwrap();
    let mut results = Vec::new();
    let mut error = None;
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(30)) {
        match msg.view() {
            gst::MessageView::Element(e) => {
                if let Some(s) = e.structure().filter(|s| s.name() == "cachenet-result") {
                    results.push(s.to_owned());
                }
            }
            gst::MessageView::Eos(..) => break,
            gst::MessageView::Error(e) => {
                error = Some(format!("{} ({:?})", e.error(), e.debug()));
                break;
            }
            _ => {}
        }
    }
    p.set_state(gst::State::Null).unwrap();
    (results, error)
}

#[test]
fn pipeline_with_videotestsrc_and_every_format() {
    let dir = tiny();
    for format in ["RGB", "BGRx", "xBGR", "RGBA", "GRAY8", "I420", "NV12"] {
        let (results, err) = run_pipeline(&format!(
            "videotestsrc num-buffers=5 pattern=white ! video/x-raw,format={format},width=64,height=48 \
             ! cachenetclassify model-dir={} ! fakesink",
            dir.display()
        ));
        assert!(err.is_none(), "{format}: {err:?}");
        assert_eq!(results.len(), 5, "{format}");
        // white frames: the full model would say "white"; submodel 0 is unsure (a miss)
        assert!(
            results.iter().all(|s| !s.get::<bool>("hit").unwrap()),
            "{format}"
        );
    }
}

#[test]
fn unsupported_caps_fail_negotiation() {
    init();
    let err = gst::parse::launch(&format!(
        "videotestsrc num-buffers=2 ! video/x-raw,format=YUY2,width=64,height=48 \
         ! cachenetclassify model-dir={} ! fakesink",
        tiny().display()
    ))
    .unwrap_err();
    assert!(err.to_string().contains("can't handle caps"), "{err}");
    // Pushed anyway (no caps query): the buffer is refused, nothing panics.
    let mut h = local(&[]);
    h.h.set_src_caps_str("video/x-raw,format=YUY2,width=16,height=16,framerate=30/1");
    let buf = gst::Buffer::from_mut_slice(vec![0u8; 16 * 16 * 2]);
    assert!(h.h.push(buf).is_err());
}

/// Cargo feature `analytics` (GStreamer >= 1.24, run by `scripts/test-analytics.sh` against 1.26):
/// every classified frame also carries a classification on the analytics relation meta.
#[cfg(feature = "analytics")]
mod analytics {
    use super::*;
    use gst_analytics::prelude::*;
    use gst_analytics::{AnalyticsClassificationMtd, AnalyticsODMtd, AnalyticsRelationMeta};
    use gstcachenet::result::Classification;

    fn frame(value: u8) -> gst::Buffer {
        gst::Buffer::from_mut_slice(vec![value; 16 * 16])
    }

    /// Each classification's top class and level (the full class vector is checked too).
    fn classifications(buf: &gst::BufferRef) -> Vec<(String, f32)> {
        let meta = buf
            .meta::<AnalyticsRelationMeta>()
            .expect("a relation meta");
        meta.iter::<AnalyticsClassificationMtd>()
            .map(|c| {
                assert_eq!(c.len(), 4, "every class of the tiny set");
                let levels: Vec<f32> = (0..c.len()).map(|i| c.level(i)).collect();
                assert!(
                    levels.windows(2).all(|w| w[0] >= w[1]),
                    "most likely first: {levels:?}"
                );
                assert!((levels.iter().sum::<f32>() - 1.0).abs() < 1e-4);
                let mut names: Vec<String> = (0..c.len())
                    .map(|i| c.quark(i).as_str().to_string())
                    .collect();
                names.sort();
                assert_eq!(names, ["black", "dark", "light", "white"]);
                (c.quark(0).as_str().to_string(), c.level(0))
            })
            .collect()
    }

    #[test]
    fn every_classified_frame_carries_a_classification_mtd() {
        // The full model (device mode) tells the tiny set's four grey levels apart.
        let mut h = local(&[("mode", v("device"))]);
        let mut labels = Vec::new();
        for value in [20u8, 230, 20] {
            let out = h.h.push_and_pull(frame(value)).unwrap();
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
        let mut h = local(&[]);
        let mut buf = frame(20);
        let od_id = {
            let b = buf.get_mut().unwrap();
            let mut meta = AnalyticsRelationMeta::add(b);
            meta.add_od_mtd(glib::Quark::from_str("person"), 1, 2, 8, 8, 0.9)
                .unwrap()
                .id()
        };
        let out = h.h.push_and_pull(buf).unwrap();
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
    fn detections_are_the_regions_and_get_related_classifications() {
        use gst_analytics::RelTypes;
        // 16x16: a dark left half and a white right half, one detection on each.
        let mut h = local(&[
            ("mode", v("device")),
            ("regions", v("roi")),
            ("min-size", v(4u32)),
        ]);
        let push = |h: &mut H, tracked: u64| {
            let mut px = vec![20u8; 16 * 16];
            for row in px.chunks_mut(16) {
                row[8..].fill(230);
            }
            let mut buf = gst::Buffer::from_mut_slice(px);
            let ids = {
                let b = buf.get_mut().unwrap();
                let mut meta = AnalyticsRelationMeta::add(b);
                let person = meta
                    .add_od_mtd(glib::Quark::from_str("person"), 0, 0, 8, 16, 0.9)
                    .unwrap()
                    .id();
                let car = meta
                    .add_od_mtd(glib::Quark::from_str("car"), 8, 0, 8, 16, 0.8)
                    .unwrap()
                    .id();
                let t = meta
                    .add_tracking_mtd(tracked, gst::ClockTime::ZERO)
                    .unwrap()
                    .id();
                meta.set_relation(RelTypes::RELATE_TO, t, car).unwrap();
                (person, car)
            };
            (h.h.push_and_pull(buf).unwrap(), ids)
        };
        let (out, (person, car)) = push(&mut h, 77);
        assert!(
            Classification::from_buffer(&out).is_none(),
            "no whole-frame result with regions=roi"
        );
        let meta = out.meta::<AnalyticsRelationMeta>().unwrap();
        let cls: Vec<_> = meta.iter::<AnalyticsClassificationMtd>().collect();
        assert_eq!(cls.len(), 2, "one classification per detection");
        for (od, label) in [(person, "black"), (car, "white")] {
            let (top, level) = gstcachenet::analytics::detection_classification(&out, od)
                .unwrap_or_else(|| panic!("detection {od} has a classification"));
            assert_eq!(top, label);
            assert!(level > 0.5);
            let c = cls
                .iter()
                .find(|c| meta.relation(c.id(), od) == RelTypes::IS_PART_OF)
                .unwrap();
            assert_eq!(meta.relation(od, c.id()), RelTypes::CONTAIN);
        }
        classifications(&out);
        // The tracked detection keeps its object from frame to frame: two regions, two objects.
        let stats = |h: &H| h.el.property::<gst::Structure>("stats");
        assert_eq!(stats(&h).get::<u64>("objects").unwrap(), 3);
        push(&mut h, 77);
        assert_eq!(stats(&h).get::<u64>("objects").unwrap(), 3);
        assert_eq!(stats(&h).get::<u64>("frames").unwrap(), 4);
    }

    #[cfg(feature = "tensor-meta")]
    #[test]
    fn probabilities_as_a_tensor_meta() {
        assert!(gstcachenet::analytics::tensor_meta_supported());
        let mut h = local(&[("mode", v("device"))]);
        let out = h.h.push_and_pull(frame(230)).unwrap();
        let p = gstcachenet::analytics::tensor(&out).expect("a tensor meta");
        assert_eq!(p.len(), 4);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-4);
        let roi = Classification::from_buffer(&out).unwrap();
        let best = (0..4).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap();
        assert_eq!(best as i32, roi.class_id);
        assert!((p[best] as f64 - roi.confidence).abs() < 1e-6);
    }

    #[test]
    fn unclassified_frames_get_no_classification() {
        // Edge mode with nothing listening: the frame has no answer (class id -1).
        let mut h = local(&[
            ("mode", v("edge")),
            ("edge-url", v("http://127.0.0.1:9")),
            ("timeout-ms", v(200u32)),
        ]);
        let out = h.h.push_and_pull(frame(20)).unwrap();
        let roi = Classification::from_buffer(&out).unwrap();
        assert_eq!((roi.class_id, roi.source.as_str()), (-1, "none"), "{roi:?}");
        assert!(out.meta::<AnalyticsRelationMeta>().is_none());
        assert_eq!(gstcachenet::analytics::classification(&out), None);
    }
}
