//! Several edges: three real `cachenet-edge` processes serving the tiny set, one killed
//! mid-stream and started again, in both set-ups: the element's own `edge-url` list
//! (rendezvous hashing, failover, return to the preferred edge) and the three behind haproxy
//! with the repository's configuration (`deploy/haproxy/cachenet-edges.cfg`). Every frame gets
//! a result from an edge (mode=edge: each frame is a request), none is degraded while another
//! edge is up, and no frame waits more than twice `timeout-ms`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gstcachenet::result::Classification;

mod common;
use common::tiny;
#[path = "common/process.rs"]
mod process;
use process::{Kill, free_port, start_edge_on, wait_ready};

const TIMEOUT_MS: u64 = 400;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Three edge processes on free ports (each slot emptied when its edge is killed).
struct Edges {
    ports: Vec<u16>,
    procs: Vec<Arc<Mutex<Option<Kill>>>>,
}

impl Edges {
    fn start() -> Edges {
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let procs = ports
            .iter()
            .map(|&p| Arc::new(Mutex::new(Some(start_edge_on(&tiny(), p)))))
            .collect();
        Edges { ports, procs }
    }

    fn url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.ports[i])
    }

    /// Kill edge `i` from another thread after `after`, while frames flow.
    fn kill_later(&self, i: usize, after: Duration) -> std::thread::JoinHandle<Instant> {
        let slot = self.procs[i].clone();
        std::thread::spawn(move || {
            std::thread::sleep(after);
            let k = slot.lock().unwrap().take();
            drop(k); // SIGKILL and reap
            Instant::now()
        })
    }

    fn restart(&self, i: usize) {
        *self.procs[i].lock().unwrap() = Some(start_edge_on(&tiny(), self.ports[i]));
    }

    /// Inference requests edge `i` answered since it started (its /metrics).
    fn answered(&self, i: usize) -> u64 {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .into();
        let text = agent
            .get(format!("{}/metrics", self.url(i)))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        text.lines()
            .filter(|l| {
                l.starts_with("cachenet_requests_total")
                    && l.contains("/infer")
                    && l.contains("status=\"200\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }
}

struct Camera {
    h: gst_check::Harness,
    el: gst::Element,
    frames: u64,
    degraded: u64,
    worst: Duration,
}

impl Camera {
    fn new(edge_url: &str) -> Camera {
        let tiny = tiny().display().to_string();
        let timeout = TIMEOUT_MS.to_string();
        let (h, el, _bus) = common::harness(&[
            ("mode", "edge"),
            ("model-dir", &tiny),
            ("edge-url", edge_url),
            ("camera-id", "entrance-3"),
            ("timeout-ms", &timeout),
        ]);
        Camera {
            h,
            el,
            frames: 0,
            degraded: 0,
            worst: Duration::ZERO,
        }
    }

    /// One frame through the element: it must come back with a result.
    fn frame(&mut self) -> Classification {
        let value = if self.frames.is_multiple_of(2) {
            20
        } else {
            230
        };
        let t = Instant::now();
        let out = self
            .h
            .push_and_pull(gst::Buffer::from_mut_slice(vec![value; 16 * 16]))
            .unwrap();
        self.worst = self.worst.max(t.elapsed());
        self.frames += 1;
        let r = Classification::from_buffer(&out).expect("a result on every frame");
        if r.degraded {
            self.degraded += 1;
        } else {
            assert_eq!(r.source, "edge", "mode=edge: the edge answers");
        }
        r
    }

    fn stats(&self) -> gst::Structure {
        self.el.property::<gst::Structure>("stats")
    }

    fn edge(&self) -> String {
        self.stats().get("edge").unwrap()
    }

    /// Frames until `done` holds (bounded).
    fn frames_until(&mut self, what: &str, limit: Duration, done: impl Fn(&Camera) -> bool) {
        let deadline = Instant::now() + limit;
        while !done(self) {
            assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
            self.frame();
        }
    }

    fn check_waits(&self) {
        println!(
            "{} frames, {} degraded, worst frame wait {:?}",
            self.frames, self.degraded, self.worst
        );
        assert!(
            self.worst <= Duration::from_millis(2 * TIMEOUT_MS),
            "worst frame wait {:?} (timeout-ms {TIMEOUT_MS})",
            self.worst
        );
    }
}

#[test]
fn edge_url_list_fails_over_and_returns_to_the_preferred_edge() {
    let edges = Edges::start();
    let list = (0..3).map(|i| edges.url(i)).collect::<Vec<_>>().join(",");
    let mut cam = Camera::new(&list);
    cam.frame();
    let stats = cam.stats();
    let order: Vec<String> = stats
        .get::<gst::Array>("edges")
        .unwrap()
        .iter()
        .map(|v| v.get::<String>().unwrap())
        .collect();
    assert_eq!(order.len(), 3);
    let preferred = order[0].clone();
    assert_eq!(cam.edge(), preferred, "starts on its preferred edge");
    let p = (0..3).find(|&i| edges.url(i) == preferred).unwrap();
    // Killed while frames flow.
    let killer = edges.kill_later(p, Duration::from_millis(300));
    cam.frames_until("the kill", Duration::from_secs(10), |_| {
        killer.is_finished()
    });
    killer.join().unwrap();
    for _ in 0..40 {
        cam.frame();
    }
    assert_eq!(cam.edge(), order[1], "failed over to its second choice");
    assert!(cam.stats().get::<u64>("failovers").unwrap() >= 1);
    // Back: the prober (every 5 s) finds it ready and the camera returns.
    edges.restart(p);
    cam.frames_until("the return", Duration::from_secs(15), |c| {
        c.edge() == preferred
    });
    let before = edges.answered(p);
    for _ in 0..10 {
        cam.frame();
    }
    assert!(
        edges.answered(p) >= before + 10,
        "answered by the preferred edge again"
    );
    assert_eq!(cam.stats().get::<u64>("edge-returns").unwrap(), 1);
    assert_eq!(cam.degraded, 0, "no frame without an edge's answer");
    cam.check_waits();
}

/// An edge whose manifest differs from the camera's is skipped with a warning.
#[test]
fn an_edge_serving_another_manifest_is_skipped() {
    let other = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(tiny()).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, other.path().join(f.file_name().unwrap())).unwrap();
    }
    let m = other.path().join("manifest.json");
    let text = std::fs::read_to_string(&m).unwrap();
    std::fs::write(&m, text.replace("\"1.0.0\"", "\"1.0.1\"")).unwrap();
    let (p_other, p_good) = (free_port(), free_port());
    let _other = start_edge_on(other.path(), p_other);
    let _good = start_edge_on(&tiny(), p_good);
    // Find a camera id that prefers the edge with the other manifest.
    let (a, b) = (
        format!("http://127.0.0.1:{p_other}"),
        format!("http://127.0.0.1:{p_good}"),
    );
    let camera = (0..)
        .map(|i| format!("cam-{i}"))
        .find(|c| gstcachenet::edge::preference_order(c, &[a.clone(), b.clone()])[0] == a)
        .unwrap();
    let tiny_dir = tiny().display().to_string();
    let (mut h, el, bus) = common::harness(&[
        ("mode", "edge"),
        ("model-dir", &tiny_dir),
        ("edge-url", &format!("{a},{b}")),
        ("camera-id", &camera),
    ]);
    for _ in 0..5 {
        let out = h
            .push_and_pull(gst::Buffer::from_mut_slice(vec![20u8; 256]))
            .unwrap();
        let r = Classification::from_buffer(&out).unwrap();
        assert!(!r.degraded && r.source == "edge");
    }
    assert_eq!(
        el.property::<gst::Structure>("stats")
            .get::<String>("edge")
            .unwrap(),
        b
    );
    let warnings: Vec<String> = std::iter::from_fn(|| bus.pop())
        .filter_map(|m| match m.view() {
            gst::MessageView::Warning(w) => Some(w.error().to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(
        warnings
            .iter()
            .filter(|w| w.contains("another manifest"))
            .count(),
        1,
        "{warnings:?}"
    );
}

/// haproxy with `deploy/haproxy/cachenet-edges.cfg` (readiness health checks, retries on
/// another edge) in front of the three.
#[test]
fn three_edges_behind_haproxy() {
    let edges = Edges::start();
    let port = free_port();
    let cfg = root().join("deploy/haproxy/cachenet-edges.cfg");
    let haproxy = Command::new("haproxy")
        .args(["-db", "-f"])
        .arg(&cfg)
        .env("CACHENET_LISTEN", format!("127.0.0.1:{port}"))
        .env("CACHENET_EDGE1", format!("127.0.0.1:{}", edges.ports[0]))
        .env("CACHENET_EDGE2", format!("127.0.0.1:{}", edges.ports[1]))
        .env("CACHENET_EDGE3", format!("127.0.0.1:{}", edges.ports[2]))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("haproxy (scripts/setup.sh installs it)");
    let _haproxy = Kill(haproxy);
    wait_ready(&format!("http://127.0.0.1:{port}"), "haproxy");
    let mut cam = Camera::new(&format!("http://127.0.0.1:{port}"));
    for _ in 0..30 {
        cam.frame();
    }
    assert!(
        (0..3).all(|i| edges.answered(i) > 0),
        "spread over the edges"
    );
    let killer = edges.kill_later(0, Duration::from_millis(300));
    cam.frames_until("the kill", Duration::from_secs(10), |_| {
        killer.is_finished()
    });
    killer.join().unwrap();
    for _ in 0..60 {
        cam.frame();
    }
    edges.restart(0);
    // haproxy's checks (every 1 s, up after 2) put it back in rotation.
    let restarted = Instant::now();
    cam.frames_until("edge 1 back in rotation", Duration::from_secs(15), |_| {
        restarted.elapsed() > Duration::from_millis(100) && edges.answered(0) > 0
    });
    assert_eq!(cam.degraded, 0, "no frame without an edge's answer");
    cam.check_waits();
}
