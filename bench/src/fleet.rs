//! `cachenet-bench fleet`: many simulated cameras against 1..M edges.
//!
//! Each camera is the element's own runtime (`gstcachenet::runtime::Runtime`: the same policy
//! code as `cachenetclassify`, mode cachenet, offload sync, cache-size 1) on a thread of its own,
//! fed frames at `--fps` from random-length class runs (geometric, mean `--run-mean` frames) of
//! a labelled frame folder, with the edges as its `edge-url` list (rendezvous hashing of its
//! camera id spreads the cameras). The edges are real `cachenet-edge` processes with
//! `--workers 1`, each pinned to a CPU of its own with `--pin`, their full model in-process or,
//! with `--edge-args "--full-model oip+http://..."`, on an inference server.
//!
//! Per level (edges x cameras): misses answered per second, p50/p99 miss latency (the frame's
//! wait on a miss: local submodel, request, the edge's answer), frames without the edge's answer
//! (503s, timeouts), failovers, the edges' CPU per 1,000 camera frames, the cameras a fully busy
//! edge core carries at the measured hit rate, and the load generator's own CPU.
//!
//!   cachenet-bench fleet --edge-bin target/release/cachenet-edge --cameras 16,32,64 --edges 1,2 --pin

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use cachenet_core::engine::{Engine, Model};
use cachenet_core::manifest::Manifest;
use cachenet_core::modelset::load_local_submodel;
use clap::Parser;
use gstcachenet::edge::EdgeClient;
use gstcachenet::runtime::{self, FRAME_OBJECT, Mode, Offload, Pixels, Runtime};
use gstcachenet::worker::Generation;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use serde::Serialize;

use crate::run::{cpu_seconds, percentile_ms, wait_ready, which};

#[derive(Debug, Parser)]
#[command(
    name = "cachenet-bench fleet",
    about = "Many simulated cameras (the element's runtime) against 1..M edges"
)]
pub struct FleetArgs {
    /// The edge binary (a release build).
    #[arg(long, default_value = "target/release/cachenet-edge")]
    pub edge_bin: PathBuf,
    #[arg(long, default_value = "models/fashion-mnist")]
    pub model_dir: PathBuf,
    /// Frames `frame-%05d.png` with `labels.csv` (frame,class_id,...), at the set's input.
    #[arg(long, default_value = ".data/replay-grouped-1000")]
    pub frames: PathBuf,
    /// Camera counts to run.
    #[arg(long, value_delimiter = ',', default_value = "16,32,64")]
    pub cameras: Vec<usize>,
    /// Edge counts to run.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub edges: Vec<usize>,
    /// Frames per second of each camera.
    #[arg(long, default_value_t = 10.0)]
    pub fps: f64,
    /// Mean length of a class run (frames).
    #[arg(long, default_value_t = 25.0)]
    pub run_mean: f64,
    /// Seconds per level (after a warm-up of 2 s that is not counted).
    #[arg(long, default_value_t = 15)]
    pub seconds: u64,
    /// The cameras' timeout-ms.
    #[arg(long, default_value_t = 1000)]
    pub timeout_ms: u64,
    /// More flags of every edge, e.g. "--full-model oip+http://127.0.0.1:8080/full".
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub edge_args: String,
    /// Pin edge k to CPU k (taskset); the cameras run on the other CPUs where there are any.
    #[arg(long)]
    pub pin: bool,
    /// Failover run: at a third of each level, kill edge 1 (SIGKILL), start it again at two
    /// thirds (levels with two edges or more).
    #[arg(long)]
    pub kill_one: bool,
    /// The p99 miss latency that "cameras per edge core" must meet (ms).
    #[arg(long, default_value_t = 100.0)]
    pub p99_limit_ms: f64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write fleet.md and the plot again from the fleet.json in --out (the flags that describe
    /// the run must be the run's) without running anything.
    #[arg(long)]
    pub report_only: bool,
    /// Where fleet.json, fleet.md and fleet-p99.png go.
    #[arg(long, default_value = "bench/results/fleet")]
    pub out: PathBuf,
}

/// One level's figures.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Level {
    pub edges: usize,
    pub cameras: usize,
    pub seconds: f64,
    pub frames: u64,
    pub hit_rate: f64,
    pub misses_answered: u64,
    pub misses_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Misses without the edge's answer (503s past every edge, timeouts).
    pub unanswered: u64,
    /// The longest any frame waited for its result (ms).
    pub worst_frame_ms: f64,
    /// Edge 1 was killed and started again during the level (`--kill-one`).
    pub killed: bool,
    pub failovers: u64,
    pub edge_cpu_s: f64,
    pub edge_cpu_ms_per_1000_frames: f64,
    /// Cameras a fully busy edge core carries at this hit rate and fps (from the edges' CPU).
    pub cameras_per_core: f64,
    pub generator_cpu_s: f64,
}

/// The frames by class.
struct Frames {
    by_class: Vec<Vec<Vec<u8>>>,
}

fn load_frames(dir: &Path, manifest: &Manifest) -> Result<Frames, String> {
    let inputs = manifest.inputs();
    let [spec] = inputs[..] else {
        return Err("the fleet bench takes sets whose models share one input".into());
    };
    let csv = std::fs::read_to_string(dir.join("labels.csv"))
        .map_err(|e| format!("{}: {e}", dir.join("labels.csv").display()))?;
    let mut by_class = vec![Vec::new(); manifest.labels.len()];
    for line in csv.lines().skip(1) {
        let mut f = line.split(',');
        let (Some(frame), Some(class)) = (f.next(), f.next()) else {
            continue;
        };
        let frame: usize = frame.parse().map_err(|_| format!("labels.csv: {line}"))?;
        let class: usize = class.parse().map_err(|_| format!("labels.csv: {line}"))?;
        let path = dir.join(format!("frame-{frame:05}.png"));
        let img = image::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let px = match spec.channels {
            1 => img.into_luma8().into_raw(),
            _ => img.into_rgb8().into_raw(),
        };
        if px.len() != spec.len() {
            return Err(format!(
                "{}: not at the set's input {}x{}x{}",
                path.display(),
                spec.width,
                spec.height,
                spec.channels
            ));
        }
        by_class
            .get_mut(class)
            .ok_or_else(|| format!("labels.csv: class {class} out of range"))?
            .push(px);
    }
    if by_class.iter().all(Vec::is_empty) {
        return Err(format!("{}: no frames", dir.display()));
    }
    Ok(Frames { by_class })
}

struct Frame<'a>(&'a [u8]);

impl Pixels for Frame<'_> {
    fn at(&mut self, _: usize) -> &[u8] {
        self.0
    }
}

/// An edge process, killed when dropped.
struct EdgeProc(Child);

impl Drop for EdgeProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

fn start_edge(
    a: &FleetArgs,
    cpu: Option<usize>,
    port: Option<u16>,
) -> Result<(EdgeProc, String), String> {
    let port = match port {
        Some(p) => p,
        None => free_port()?,
    };
    let mut cmd = match cpu {
        Some(c) => {
            let mut t = Command::new("taskset");
            t.args(["-c", &c.to_string()]).arg(&a.edge_bin);
            t
        }
        None => Command::new(&a.edge_bin),
    };
    cmd.arg("--model-dir")
        .arg(&a.model_dir)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--workers", "1"])
        .args(a.edge_args.split_whitespace())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let edge = EdgeProc(
        cmd.spawn()
            .map_err(|e| format!("{}: {e}", a.edge_bin.display()))?,
    );
    let url = format!("http://127.0.0.1:{port}");
    wait_ready(&url, Duration::from_secs(90))?;
    Ok((edge, url))
}

/// What one camera measured.
#[derive(Default)]
struct CameraReport {
    frames: u64,
    hits: u64,
    miss_us: Vec<u64>,
    unanswered: u64,
    failovers: u64,
    worst_us: u64,
}

struct CameraSetup {
    id: usize,
    urls: String,
    manifest: Manifest,
    first: Model,
    timeout: Duration,
    fps: f64,
    run_mean: f64,
    seed: u64,
}

/// One camera: frames at `fps` until `stop`; what it measured after `counting`.
fn camera(
    s: CameraSetup,
    frames: &Frames,
    ready: &Barrier,
    counting: &AtomicBool,
    stop: &AtomicBool,
) -> Result<CameraReport, String> {
    let camera_id = format!("fleet-camera-{}", s.id);
    let edge = EdgeClient::new(&s.urls, &s.manifest.name, None, s.timeout, None, &camera_id)?;
    let mut config = runtime::Config::new(Mode::CacheNet, Offload::Sync, s.manifest.threshold, 1);
    config.timeout = s.timeout;
    config.audit.interval = 0;
    let mut rt = Runtime::new(
        s.manifest,
        config,
        None,
        vec![(0, s.first)],
        Some(edge),
        None,
        Generation::default(),
    )?;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(s.seed.wrapping_add(s.id as u64 * 7919));
    let classes: Vec<usize> = (0..frames.by_class.len())
        .filter(|&c| !frames.by_class[c].is_empty())
        .collect();
    let period = Duration::from_secs_f64(1.0 / s.fps);
    let mut report = CameraReport::default();
    let (mut class, mut left, mut at) = (classes[0], 0u64, 0usize);
    let mut failovers_at_start = 0;
    let mut counted = false;
    ready.wait();
    // Cameras start at random phases of a frame period.
    let mut next = Instant::now() + period.mul_f64(rng.random::<f64>());
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now < next {
            std::thread::sleep(next - now);
        }
        next += period;
        if next < Instant::now() {
            next = Instant::now(); // behind: frames are not queued up
        }
        if left == 0 {
            class = classes[rng.random_range(0..classes.len())];
            let u: f64 = rng.random::<f64>().max(1e-12);
            left = 1 + (u.ln() / (1.0 - 1.0 / s.run_mean).ln()).floor() as u64;
            at = rng.random_range(0..frames.by_class[class].len());
        }
        left -= 1;
        let pool = &frames.by_class[class];
        let px = &pool[at % pool.len()];
        at += 1;
        let t = Instant::now();
        let outcome = rt.process_object(FRAME_OBJECT, &mut Frame(px), true);
        let took = t.elapsed();
        let _ = rt.end_frame();
        if !counted && counting.load(Ordering::Relaxed) {
            counted = true;
            failovers_at_start = rt.stats().failovers;
        }
        if !counted {
            continue;
        }
        report.frames += 1;
        report.worst_us = report.worst_us.max(took.as_micros() as u64);
        report.hits += u64::from(outcome.result.hit);
        if outcome.offloaded {
            if outcome.result.degraded {
                report.unanswered += 1;
            } else {
                report.miss_us.push(took.as_micros() as u64);
            }
        }
    }
    report.failovers = rt.stats().failovers - failovers_at_start;
    Ok(report)
}

/// With `--pin`: the cameras (this process) on the CPUs the edges do not take (all of them when
/// the edges take every CPU: then they share, and the table says so).
fn pin_generator(n_edges: usize, cpus: usize) {
    let list = if n_edges < cpus {
        format!("{n_edges}-{}", cpus - 1)
    } else {
        eprintln!(
            "[fleet]   warning: {n_edges} edge(s) pinned on {cpus} CPUs: the cameras share the \
             edges' CPUs"
        );
        format!("0-{}", cpus - 1)
    };
    let ok = Command::new("taskset")
        .args(["-a", "-cp", &list, &std::process::id().to_string()])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("[fleet]   warning: taskset could not pin the cameras to CPUs {list}");
    }
}

fn run_level(
    a: &FleetArgs,
    cpus: usize,
    manifest: &Manifest,
    first: &Model,
    frames: &Arc<Frames>,
    n_edges: usize,
    n_cameras: usize,
) -> Result<Level, String> {
    let pin = a.pin && which("taskset");
    if pin {
        pin_generator(n_edges, cpus);
    }
    let mut edges = Vec::new();
    for k in 0..n_edges {
        edges.push(start_edge(a, pin.then_some(k), None)?);
    }
    let urls = edges
        .iter()
        .map(|(_, u)| u.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let ready = Arc::new(Barrier::new(n_cameras + 1));
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for id in 0..n_cameras {
        let setup = CameraSetup {
            id,
            urls: urls.clone(),
            manifest: manifest.clone(),
            first: first.clone(),
            timeout: Duration::from_millis(a.timeout_ms),
            fps: a.fps,
            run_mean: a.run_mean,
            seed: a.seed,
        };
        let (frames, ready, counting, stop) = (
            frames.clone(),
            ready.clone(),
            counting.clone(),
            stop.clone(),
        );
        threads.push(
            std::thread::Builder::new()
                .name(format!("camera-{id}"))
                .stack_size(1 << 20)
                .spawn(move || camera(setup, &frames, &ready, &counting, &stop))
                .map_err(|e| e.to_string())?,
        );
    }
    ready.wait();
    std::thread::sleep(Duration::from_secs(2));
    let me = std::process::id();
    // A pinned edge runs under taskset's pid (taskset execs the edge).
    let edge_cpu = |edges: &[(EdgeProc, String)]| {
        edges
            .iter()
            .map(|(p, _)| cpu_seconds(p.0.id()))
            .sum::<f64>()
    };
    let (mut e0, g0, t0) = (edge_cpu(&edges), cpu_seconds(me), Instant::now());
    counting.store(true, Ordering::Relaxed);
    let kill = a.kill_one && n_edges >= 2;
    if kill {
        let third = Duration::from_secs_f64(a.seconds as f64 / 3.0);
        std::thread::sleep(third);
        let port: u16 = edges[0]
            .1
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or("port")?;
        // Its CPU so far counts; the new process starts from zero.
        e0 -= cpu_seconds(edges[0].0.0.id());
        let (killed, _) = edges.remove(0);
        drop(killed);
        eprintln!("[fleet]   edge 1 killed");
        std::thread::sleep(third);
        edges.insert(0, start_edge(a, pin.then_some(0), Some(port))?);
        eprintln!("[fleet]   edge 1 started again");
        std::thread::sleep(
            (t0 + Duration::from_secs(a.seconds)).saturating_duration_since(Instant::now()),
        );
    } else {
        std::thread::sleep(Duration::from_secs(a.seconds));
    }
    stop.store(true, Ordering::Relaxed);
    let (e1, g1, secs) = (
        edge_cpu(&edges),
        cpu_seconds(me),
        t0.elapsed().as_secs_f64(),
    );
    let mut total = CameraReport::default();
    for t in threads {
        let r = t.join().map_err(|_| "a camera thread panicked")??;
        total.frames += r.frames;
        total.hits += r.hits;
        total.miss_us.extend(r.miss_us);
        total.unanswered += r.unanswered;
        total.failovers += r.failovers;
        total.worst_us = total.worst_us.max(r.worst_us);
    }
    drop(edges);
    let edge_cpu_s = e1 - e0;
    let hit_rate = total.hits as f64 / total.frames.max(1) as f64;
    let per_frame = edge_cpu_s / total.frames.max(1) as f64;
    Ok(Level {
        edges: n_edges,
        cameras: n_cameras,
        seconds: secs,
        frames: total.frames,
        hit_rate,
        misses_answered: total.miss_us.len() as u64,
        misses_per_s: total.miss_us.len() as f64 / secs,
        p50_ms: percentile_ms(&mut total.miss_us, 0.5),
        p99_ms: percentile_ms(&mut total.miss_us, 0.99),
        unanswered: total.unanswered,
        worst_frame_ms: total.worst_us as f64 / 1000.0,
        killed: kill,
        failovers: total.failovers,
        edge_cpu_s,
        edge_cpu_ms_per_1000_frames: per_frame * 1e6,
        cameras_per_core: if per_frame > 0.0 {
            1.0 / (per_frame * a.fps)
        } else {
            f64::NAN
        },
        generator_cpu_s: g1 - g0,
    })
}

/// The markdown table of the levels, and per edge count the most cameras per edge core that
/// kept p99 within the limit.
pub fn markdown(levels: &[Level], a: &FleetArgs) -> String {
    let mut md = format!(
        "Fleet: {} fps per camera, class runs of mean {} frames, {} s per level, edges with \
         --workers 1{}{}\n\n",
        a.fps,
        a.run_mean,
        a.seconds,
        if a.pin {
            ", each pinned to its own CPU"
        } else {
            ""
        },
        if a.edge_args.is_empty() {
            String::new()
        } else {
            format!(", edge flags `{}`", a.edge_args)
        }
    );
    md.push_str(
        "| edges | cameras | hit rate | misses/s | p50 miss ms | p99 miss ms | worst frame ms | \
         unanswered | failovers | edge CPU ms / 1000 frames | cameras per busy edge core | \
         generator CPU s/s |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for l in levels {
        md.push_str(&format!(
            "| {}{} | {} | {:.1} % | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {:.0} | {:.0} | {:.2} |\n",
            l.edges,
            if l.killed { " (1 killed)" } else { "" },
            l.cameras,
            100.0 * l.hit_rate,
            l.misses_per_s,
            l.p50_ms,
            l.p99_ms,
            l.worst_frame_ms,
            l.unanswered,
            l.failovers,
            l.edge_cpu_ms_per_1000_frames,
            l.cameras_per_core,
            l.generator_cpu_s / l.seconds
        ));
    }
    md.push('\n');
    let mut edge_counts: Vec<usize> = levels.iter().map(|l| l.edges).collect();
    edge_counts.dedup();
    for m in edge_counts {
        let run: Vec<&Level> = levels
            .iter()
            .filter(|l| l.edges == m && !l.killed)
            .collect();
        let best = run
            .iter()
            .filter(|l| l.p99_ms <= a.p99_limit_ms && l.unanswered == 0)
            .map(|l| l.cameras)
            .max();
        let largest = run.iter().map(|l| l.cameras).max();
        md.push_str(&match best {
            Some(n) => format!(
                "- {m} edge(s): at most {n} cameras with p99 <= {} ms and every miss answered \
                 ({:.0} per edge core){}\n",
                a.p99_limit_ms,
                n as f64 / m as f64,
                if Some(n) == largest {
                    "; the largest level run, so the limit is higher"
                } else {
                    ""
                }
            ),
            None if run.is_empty() => String::new(),
            None => format!(
                "- {m} edge(s): no level kept p99 <= {} ms\n",
                a.p99_limit_ms
            ),
        });
    }
    md
}

pub fn main(args: impl IntoIterator<Item = String>) -> Result<(), String> {
    let a = FleetArgs::parse_from(args);
    let json = a.out.join("fleet.json");
    if a.report_only {
        let levels: Vec<Level> = serde_json::from_slice(
            &std::fs::read(&json).map_err(|e| format!("{}: {e}", json.display()))?,
        )
        .map_err(|e| format!("{}: {e}", json.display()))?;
        return write_report(&a, &levels);
    }
    let manifest = Manifest::load(&a.model_dir).map_err(|e| e.to_string())?;
    let frames = Arc::new(load_frames(&a.frames, &manifest)?);
    let first = load_local_submodel(&a.model_dir, &manifest, 0, &Engine::default())
        .map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&a.out).map_err(|e| format!("--out: {e}"))?;
    // Before any pinning narrows what this process sees.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut levels = Vec::new();
    for &m in &a.edges {
        for &n in &a.cameras {
            eprintln!("[fleet] {m} edge(s), {n} cameras, {} s ...", a.seconds);
            let l = run_level(&a, cpus, &manifest, &first, &frames, m, n)?;
            eprintln!(
                "[fleet]   hit rate {:.1} %, {:.1} misses/s, p50 {:.1} ms, p99 {:.1} ms, \
                 {} unanswered, edge CPU {:.2} s",
                100.0 * l.hit_rate,
                l.misses_per_s,
                l.p50_ms,
                l.p99_ms,
                l.unanswered,
                l.edge_cpu_s
            );
            levels.push(l);
        }
    }
    std::fs::write(&json, serde_json::to_vec_pretty(&levels).expect("json"))
        .map_err(|e| e.to_string())?;
    write_report(&a, &levels)
}

/// fleet.md and the plot of p99 against cameras, from `levels`.
fn write_report(a: &FleetArgs, levels: &[Level]) -> Result<(), String> {
    let json = a.out.join("fleet.json");
    let md = markdown(levels, a);
    std::fs::write(a.out.join("fleet.md"), &md).map_err(|e| e.to_string())?;
    print!("{md}");
    let plot = Path::new(env!("CARGO_MANIFEST_DIR")).join("plot_fleet.py");
    match Command::new("python3").arg(&plot).arg(&json).status() {
        Ok(s) if s.success() => eprintln!("plot: {}/fleet-p99.png", a.out.display()),
        _ => eprintln!("warning: plotting failed (python3 with matplotlib needed)"),
    }
    Ok(())
}
