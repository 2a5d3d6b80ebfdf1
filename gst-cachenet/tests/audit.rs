//! Audits of hits (`audit-interval`, `audit-seed`) and threshold calibration
//! (`target-agreement`) with gst_check::Harness, against the real in-process edge (which agrees
//! with the tiny set's submodels on its dark frames) and against a fake edge on a bound port
//! that answers whatever class the test says. Tiny set: dark frames (value 20: entropy 0 on
//! submodel 0) and marginal ones (value 59: class "black" at 0.39 nats, under the threshold
//! 0.5 by less than two 10 % steps).

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use cachenet_core::proto;
use gst::prelude::*;
use gstcachenet::result::Classification;
use prost::Message;

mod common;
use common::{edge, tiny};
#[path = "common/http.rs"]
mod http;

const DARK: u8 = 20;
const MARGINAL: u8 = 59;

struct H {
    h: gst_check::Harness,
    el: gst::Element,
    bus: gst::Bus,
}

/// The element on the tiny set against `edge_url`, properties as gst-launch strings.
fn harness(edge_url: &str, props: &[(&str, &str)]) -> H {
    let tiny = tiny().display().to_string();
    let mut all = vec![("model-dir", tiny.as_str()), ("edge-url", edge_url)];
    all.extend_from_slice(props);
    let (h, el, bus) = common::harness(&all);
    H { h, el, bus }
}

impl H {
    fn push(&mut self, value: u8) -> Classification {
        let out = self
            .h
            .push_and_pull(gst::Buffer::from_mut_slice(vec![value; 16 * 16]))
            .unwrap();
        Classification::from_buffer(&out).expect("a result on every frame")
    }

    fn stats(&self) -> gst::Structure {
        self.el.property::<gst::Structure>("stats")
    }

    fn stat(&self, name: &str) -> u64 {
        self.stats().get(name).unwrap()
    }

    /// The `cachenet-audit` messages and warnings posted so far.
    fn drain(&self) -> (Vec<gst::Structure>, Vec<String>) {
        let (mut audits, mut warnings) = (Vec::new(), Vec::new());
        while let Some(m) = self.bus.pop() {
            match m.view() {
                gst::MessageView::Element(e) => {
                    let s = e.structure().unwrap();
                    if s.name() == "cachenet-audit" {
                        audits.push(s.to_owned());
                    }
                }
                gst::MessageView::Warning(w) => warnings.push(w.error().to_string()),
                _ => {}
            }
        }
        (audits, warnings)
    }
}

/// A fake edge: every infer request is answered with class `class` (probability 1) and
/// submodel 0 (so that a miss never swaps); audits are counted apart and, while `hold` is set,
/// their answers wait until the test sends on its pair.
#[derive(Default)]
struct Fake {
    class: AtomicU32,
    requests: AtomicUsize,
    audits: AtomicUsize,
    /// Answers written.
    answered: AtomicUsize,
    hold: Mutex<Option<mpsc::Receiver<()>>>,
    holding: AtomicBool,
}

fn fake_edge(fake: Arc<Fake>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tiny().join("manifest.json")).unwrap()).unwrap();
    let sha0 = manifest["submodels"][0]["sha256"]
        .as_str()
        .unwrap()
        .to_string();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { return };
            let (fake, sha0) = (fake.clone(), sha0.clone());
            std::thread::spawn(move || {
                let Some((_, body)) = http::read_request(&c) else {
                    return;
                };
                let req = proto::InferRequest::decode(body.as_slice()).unwrap();
                fake.requests.fetch_add(1, SeqCst);
                if req.audited_submodel.is_some() {
                    fake.audits.fetch_add(1, SeqCst);
                    let held = fake.hold.lock().unwrap().take();
                    if let Some(release) = held {
                        fake.holding.store(true, SeqCst);
                        let _ = release.recv_timeout(Duration::from_secs(60));
                        fake.holding.store(false, SeqCst);
                    }
                }
                let class = fake.class.load(SeqCst);
                let mut probabilities = vec![0.0; 4];
                probabilities[class as usize] = 1.0;
                let resp = proto::InferResponse {
                    request_id: req.request_id,
                    class_id: class,
                    probabilities,
                    submodel_id: 0,
                    submodel_sha256: sha0,
                    ..Default::default()
                };
                http::write_ok(&mut c, &resp.encode_to_vec());
                fake.answered.fetch_add(1, SeqCst);
            });
        }
    });
    url
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

/// Push a frame; when it sent an audit, wait until the edge has answered it (the element
/// takes the answer at a later frame boundary).
fn push_audited(h: &mut H, fake: &Fake, value: u8) -> Classification {
    let sent = h.stat("audits-sent");
    let r = h.push(value);
    if h.stat("audits-sent") > sent {
        let until = deadline();
        while fake.answered.load(SeqCst) < fake.requests.load(SeqCst) {
            assert!(Instant::now() < until, "the edge never answered the audit");
            std::thread::yield_now();
        }
    }
    r
}

/// The audit's bus message and counters; the same seed draws the same hits; an edge that
/// agrees moves no threshold; the edge counts the audits in /metrics.
#[test]
fn audits_of_hits_are_posted_counted_and_seeded() {
    let e = edge();
    let draws = |seed: &str| {
        let mut h = harness(
            &e.url(),
            &[
                ("audit-interval", "4"),
                ("audit-seed", seed),
                ("target-agreement", "0.97"),
            ],
        );
        for _ in 0..400 {
            let r = h.push(DARK);
            assert!(r.hit && r.source == "device", "{r:?}");
            assert_eq!(
                r.threshold as f32, 0.5,
                "an agreeing edge moves no threshold"
            );
        }
        // One hit in 4 drawn (sent or dropped: an audit in flight drops the next one).
        let drawn = h.stat("audits-sent") + h.stat("audits-dropped");
        assert!((60..140).contains(&drawn), "{drawn} of 400 hits at 1/4");
        // The last audit's answer is taken at a frame boundary.
        let until = deadline();
        while h.stat("audits") + h.stat("audits-failed") < h.stat("audits-sent") {
            assert!(Instant::now() < until, "the last audit was never answered");
            assert!(h.push(DARK).hit);
        }
        let (audits, warnings) = h.drain();
        assert!(warnings.is_empty(), "{warnings:?}");
        let s = h.stats();
        let n = |k: &str| s.get::<u64>(k).unwrap();
        assert_eq!(n("audits-failed"), 0);
        assert_eq!(
            n("audits"),
            n("audit-agree"),
            "the full model agrees on dark frames"
        );
        assert_eq!(audits.len() as u64, n("audits"));
        assert_eq!(n("misses"), 0, "an audit never counts as a miss");
        for a in &audits {
            assert_eq!(a.get::<u32>("submodel").unwrap(), 0);
            assert_eq!(a.get::<String>("local-label").unwrap(), "black");
            assert_eq!(a.get::<String>("edge-label").unwrap(), "black");
            assert!(a.get::<bool>("agree").unwrap());
            assert!(a.get::<u64>("frame").unwrap() < n("frames"));
        }
        let subs = s.get::<gst::List>("submodels").unwrap();
        let sub = subs.as_slice()[0].get::<gst::Structure>().unwrap();
        assert_eq!(sub.get::<u64>("audits").unwrap(), n("audits"));
        assert_eq!(sub.get::<f64>("agreement").unwrap(), 1.0);
        let (low, high) = (
            sub.get::<f64>("agreement-low").unwrap(),
            sub.get::<f64>("agreement-high").unwrap(),
        );
        let window = sub.get::<u64>("window").unwrap();
        assert_eq!((low, high), gstcachenet::audit::wilson(window, window));
        assert!(window >= 1 && low > 0.2 && high == 1.0, "{low} {high}");
        drawn
    };
    assert_eq!(draws("11"), draws("11"), "a seed draws the same hits");
    let m = ureq::get(format!("{}/metrics", e.url()))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(
        m.contains("cachenet_audits_total{set=\"tiny\",submodel=\"0\"}"),
        "{m}"
    );
}

/// An audit in flight delays no frame and never takes a miss's place: while the edge holds
/// the audit's answer, frames keep flowing (their drawn audits dropped and counted) and a miss
/// is answered by the edge.
#[test]
fn audits_never_delay_a_frame() {
    let fake = Arc::new(Fake::default());
    let (release, held) = mpsc::channel();
    *fake.hold.lock().unwrap() = Some(held);
    let mut h = harness(
        &fake_edge(fake.clone()),
        &[("audit-interval", "1"), ("audit-seed", "3")],
    );
    assert!(h.push(DARK).hit);
    let until = deadline();
    while !fake.holding.load(SeqCst) {
        assert!(Instant::now() < until, "the audit never reached the edge");
        std::thread::yield_now();
    }
    for _ in 0..50 {
        assert!(h.push(DARK).hit);
    }
    // A miss goes to the edge while the audit is still held there.
    let miss = h.push(240);
    assert_eq!(
        (miss.source.as_str(), miss.hit),
        ("edge", false),
        "{miss:?}"
    );
    assert!(fake.holding.load(SeqCst), "the audit was still held");
    assert_eq!(h.stat("audits-sent"), 1);
    assert_eq!(h.stat("audits-dropped"), 50);
    release.send(()).unwrap();
    // The answer is taken at a frame boundary; `stats` is read before the frame's end.
    let until = deadline();
    while h.stat("audits") == 0 {
        assert!(Instant::now() < until, "the held audit never came back");
        assert!(h.push(DARK).hit);
    }
    assert!(!h.drain().0.is_empty(), "its cachenet-audit message");
}

/// An edge that disagrees on every audit drives the threshold down, and with it the hit rate
/// (marginal frames go to the edge); once it agrees, the threshold rises back and the marginal
/// frames are hits again, never above the threshold at start.
#[test]
fn calibration_follows_the_edges_agreement() {
    let fake = Arc::new(Fake::default());
    fake.class.store(3, SeqCst); // "white": never what submodel 0 says on these frames
    let mut h = harness(
        &fake_edge(fake.clone()),
        &[
            ("audit-interval", "1"),
            ("audit-seed", "5"),
            ("target-agreement", "0.97"),
            ("threshold", "0.5"),
            ("max-pending-messages", "0"),
        ],
    );
    let r = h.push(MARGINAL);
    assert!(r.hit && r.entropy > 0.3 && r.entropy < 0.45, "{r:?}");
    let until = deadline();
    let mut pushed = 0;
    let low = loop {
        assert!(Instant::now() < until, "the threshold never dropped");
        push_audited(&mut h, &fake, DARK);
        let r = push_audited(&mut h, &fake, MARGINAL);
        pushed += 2;
        if !r.hit {
            assert_eq!(r.source, "edge", "{r:?}");
            break r.threshold;
        }
    };
    // 0.5 -> 0.45 -> 0.405 -> 0.3645: three steps of at least 20 audits each.
    assert!((low - 0.3645).abs() < 1e-3, "{low}");
    assert!(h.stat("audits") >= 60 && pushed >= 60, "{pushed} frames");
    let (audits, warnings) = h.drain();
    assert!(audits.iter().all(|a| !a.get::<bool>("agree").unwrap()));
    assert!(
        warnings.is_empty(),
        "above the floor: no warning yet: {warnings:?}"
    );
    // Marginal frames now miss: the hit rate falls to about one half.
    let (hits, frames) = (h.stat("hits"), h.stat("frames"));
    for _ in 0..20 {
        push_audited(&mut h, &fake, DARK);
        assert!(!push_audited(&mut h, &fake, MARGINAL).hit);
    }
    assert_eq!(h.stat("hits") - hits, 20);
    assert_eq!(h.stat("frames") - frames, 40);

    fake.class.store(0, SeqCst); // the edge now agrees
    let until = deadline();
    let back = loop {
        assert!(Instant::now() < until, "the threshold never rose");
        push_audited(&mut h, &fake, DARK);
        let r = push_audited(&mut h, &fake, MARGINAL);
        assert!(r.threshold <= 0.5 + 1e-6);
        if r.hit {
            break r.threshold;
        }
    };
    assert!(back > 0.3946 && back < 0.45, "{back}");
    let s = h.stats();
    assert_eq!(s.get::<f64>("threshold").unwrap(), back);
}

/// `audit-interval=0` sends no audits: the edge sees exactly the misses, as without auditing.
#[test]
fn auditing_off_sends_nothing_but_misses() {
    let fake = Arc::new(Fake::default());
    let mut h = harness(&fake_edge(fake.clone()), &[("audit-interval", "0")]);
    for i in 0..200 {
        let r = h.push(if i % 50 == 49 { 240 } else { DARK });
        assert_eq!(r.hit, i % 50 != 49, "{i}: {r:?}");
    }
    assert_eq!(fake.requests.load(SeqCst), 4);
    assert_eq!(fake.audits.load(SeqCst), 0);
    let s = h.stats();
    for k in ["audits-sent", "audits", "audits-dropped", "audits-failed"] {
        assert_eq!(s.get::<u64>(k).unwrap(), 0, "{k}");
    }
    assert!(h.drain().0.is_empty());
}

/// `--collect`: the real edge writes the frames of misses and audits with the full model's
/// answers, the material to retrain the set for this camera.
#[test]
fn the_edge_collects_missed_and_audited_frames() {
    use cachenet_edge::{AppState, Background, Config, collect::Collector};
    let dir = tempfile::tempdir().unwrap();
    let state = AppState::load(Config {
        model_dirs: vec![tiny()],
        collect: Some(Arc::new(Collector::open(dir.path(), 1 << 20).unwrap())),
        ..Config::default()
    })
    .unwrap();
    let e = Background::start(state, "127.0.0.1:0").unwrap();
    let mut h = harness(&e.url(), &[("audit-interval", "1"), ("audit-seed", "2")]);
    let miss = h.push(240);
    assert_eq!(miss.source, "edge");
    let until = deadline();
    while h.stat("audits") == 0 {
        assert!(Instant::now() < until, "no audit answered");
        h.push(DARK);
    }
    let folder = dir.path().join("tiny");
    let mut kinds = std::collections::BTreeMap::<String, std::collections::BTreeSet<String>>::new();
    for f in std::fs::read_dir(&folder).unwrap().flatten() {
        let p = f.path();
        if p.extension().is_some_and(|x| x == "json") {
            let j: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            assert!(p.with_extension("png").exists());
            kinds
                .entry(j["kind"].as_str().unwrap().to_string())
                .or_default()
                .insert(j["label"].as_str().unwrap().to_string());
        }
    }
    // The bright frame missed (white); dark frames are audited (black), and may have missed
    // while submodel 1 was active.
    assert!(kinds["miss"].contains("white"), "{kinds:?}");
    assert_eq!(kinds["audit"], ["black".to_string()].into(), "{kinds:?}");
}
