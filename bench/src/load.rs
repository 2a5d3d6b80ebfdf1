//! Load on one edge server: C concurrent clients post infer requests (frames at the set's full
//! model input, read from --model-dir's manifest) back to back for S seconds, for each C given;
//! prints per level the answers per second, latency percentiles of the 200s, the 503s (refused
//! beyond capacity) and their latency, other errors, and the edge process's RSS before and
//! after. `--edge-args` are passed to the edge it starts (a backend, its workers).
//!
//!   cachenet-load --edge-bin target/release/cachenet-edge --model-dir models/fashion-mnist \
//!       --clients 1,8,64 --seconds 30
//!   cachenet-load --edge-bin target/release/cachenet-edge --model-dir models/real-footage \
//!       --edge-args "--workers 1 --backend onnxruntime" --clients 1,4 --seconds 20

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cachenet_core::proto;
use clap::Parser;
use prost::Message;

#[derive(Parser)]
#[command(about = "Concurrent clients against one cachenet-edge: throughput, latency, 503s, RSS")]
struct Args {
    /// The edge binary to start (on a free loopback port) ...
    #[arg(long)]
    edge_bin: Option<PathBuf>,
    /// ... with this model set.
    #[arg(long, default_value = "models/fashion-mnist")]
    model_dir: PathBuf,
    /// Or an edge already running (http://host:port); its RSS is not reported.
    #[arg(long)]
    edge_url: Option<String>,
    /// More arguments of the edge it starts, e.g. "--workers 1 --backend onnxruntime".
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    edge_args: String,
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    clients: Vec<usize>,
    #[arg(long, default_value_t = 30)]
    seconds: u64,
}

struct Edge(Child);
impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_mb(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

#[derive(Default)]
struct Tally {
    ok_us: Vec<u64>,
    busy_us: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = Args::parse();
    let manifest = cachenet_core::manifest::Manifest::load(&a.model_dir)?;
    let spec = manifest.full_input().clone();
    let (url, edge) = match (&a.edge_url, &a.edge_bin) {
        (Some(u), _) => (u.trim_end_matches('/').to_string(), None),
        (None, Some(bin)) => {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let child = Command::new(bin)
                .arg("--model-dir")
                .arg(&a.model_dir)
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .args(a.edge_args.split_whitespace())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            (format!("http://127.0.0.1:{port}"), Some(Edge(child)))
        }
        (None, None) => return Err("give --edge-bin or --edge-url".into()),
    };
    cachenet_bench::run::wait_ready(&url, Duration::from_secs(60))?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(15)))
        .build()
        .into();
    let pid = edge.as_ref().map(|e| e.0.id());
    let infer = format!("{url}/v1/models/{}/infer", manifest.name);
    println!(
        "| clients | answers/s | p50 (ms) | p99 (ms) | 503s | 503 p99 (ms) | errors | edge RSS before -> after (MB) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for &clients in &a.clients {
        let before = pid.and_then(rss_mb);
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let started = Instant::now();
        let threads: Vec<_> = (0..clients)
            .map(|c| {
                let (stop, tally, infer) = (stop.clone(), tally.clone(), infer.clone());
                let (w, h, ch) = (spec.width, spec.height, spec.channels);
                let agent = agent.clone();
                std::thread::spawn(move || {
                    let mut seq = 0u32;
                    let mut mine = Tally::default();
                    while !stop.load(Ordering::Relaxed) {
                        seq += 1;
                        let pixels: Vec<u8> = (0..w * h * ch)
                            .map(|i| ((i as u32 * 7 + seq * 13 + c as u32 * 31) % 256) as u8)
                            .collect();
                        let body = proto::InferRequest {
                            api_version: 1,
                            request_id: format!("{c}-{seq}"),
                            image: Some(proto::infer_request::Image::Raw(proto::RawFrame {
                                pixels,
                                width: w as u32,
                                height: h as u32,
                                channels: ch as u32,
                            })),
                            cached_submodels: vec![0],
                            audited_submodel: None,
                        }
                        .encode_to_vec();
                        let t = Instant::now();
                        let r = agent
                            .post(&infer)
                            .header("content-type", proto::CONTENT_TYPE)
                            .send(&body[..]);
                        let us = t.elapsed().as_micros() as u64;
                        match r {
                            Ok(mut resp) => {
                                let mut buf = Vec::new();
                                let _ = resp.body_mut().as_reader().read_to_end(&mut buf);
                                match resp.status().as_u16() {
                                    200 if proto::InferResponse::decode(&buf[..]).is_ok() => {
                                        mine.ok_us.push(us)
                                    }
                                    503 => mine.busy_us.push(us),
                                    s => {
                                        mine.errors += 1;
                                        mine.first_error.get_or_insert(format!("status {s}"));
                                    }
                                }
                            }
                            Err(e) => {
                                mine.errors += 1;
                                mine.first_error.get_or_insert(e.to_string());
                            }
                        }
                    }
                    let mut t = tally.lock().unwrap();
                    t.ok_us.extend(mine.ok_us);
                    t.busy_us.extend(mine.busy_us);
                    t.errors += mine.errors;
                    if t.first_error.is_none() {
                        t.first_error = mine.first_error;
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(a.seconds));
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            let _ = t.join();
        }
        let wall = started.elapsed().as_secs_f64();
        // Let the edge settle before reading its memory.
        std::thread::sleep(Duration::from_secs(2));
        let after = pid.and_then(rss_mb);
        let mut t = tally.lock().unwrap();
        let n_ok = t.ok_us.len();
        let n_busy = t.busy_us.len();
        let rss = match (before, after) {
            (Some(b), Some(a)) => format!("{b:.0} -> {a:.0}"),
            _ => "-".into(),
        };
        println!(
            "| {clients} | {:.0} | {:.1} | {:.1} | {n_busy} | {:.1} | {}{} | {rss} |",
            n_ok as f64 / wall,
            cachenet_bench::run::percentile_ms(&mut t.ok_us, 0.5),
            cachenet_bench::run::percentile_ms(&mut t.ok_us, 0.99),
            cachenet_bench::run::percentile_ms(&mut t.busy_us, 0.99),
            t.errors,
            t.first_error
                .as_ref()
                .map_or(String::new(), |e| format!(" ({e})")),
        );
    }
    Ok(())
}
