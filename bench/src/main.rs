//! `cachenet-bench`: reproduce the paper's comparison of Device, Edge and CacheNet.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cachenet_bench::proxy::{Link, Proxy};
use cachenet_bench::report::{self, ModeReport};
use cachenet_bench::run::{CpuLimit, run_measured, which};
use clap::Parser;

/// Runs real pipelines (`... ! cachenetclassify mode=X ! fakesink`) against a real cachenet-edge
/// behind an emulated link and writes a table (markdown), every number (JSON) and plots (PNG).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Model set served by the edge and cached on the device.
    #[arg(long, default_value = "models/fashion-mnist")]
    model_dir: PathBuf,
    /// grouped, segments, shuffled (Fashion-MNIST test set, generated with --seed), or a folder
    /// of frame-%05d.png with labels.csv.
    #[arg(long, default_value = "grouped")]
    sequence: String,
    /// Frames to replay (generated sequences; 0: the whole test set).
    #[arg(long, default_value_t = 1000)]
    frames: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Fraction of one CPU for the device pipeline (cgroup v1 quota, needs root); 0: no limit.
    #[arg(long, default_value_t = 0.25)]
    device_cpu: f64,
    /// Link profiles, one table each: ethernet, wifi, lte, none.
    #[arg(long, value_delimiter = ',', default_value = "ethernet,wifi,lte")]
    link: Vec<String>,
    /// Custom link round-trip time (overrides --link).
    #[arg(long)]
    rtt_ms: Option<f64>,
    /// Custom link bandwidth in Mbit/s (with --rtt-ms).
    #[arg(long)]
    mbps: Option<f64>,
    /// Modes to run.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "device,edge,cachenet,submodel-only"
    )]
    modes: Vec<String>,
    /// The element's `offload` in every run: sync (a missed frame waits for the edge) or async.
    #[arg(long, default_value = "sync", value_parser = ["sync", "async"])]
    offload: String,
    /// The element's `prefetch` (fetch the set's other submodels after start) in every run.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    prefetch: bool,
    /// Thresholds for the CacheNet sweep on the first link, comma-separated ("": no sweep).
    #[arg(long, default_value = "0.1,0.3,0.6,1.0")]
    sweep: String,
    /// cache-size values for CacheNet on the first link, comma-separated ("": none).
    #[arg(long, default_value = "1,2,3,4")]
    cache_sizes: String,
    /// Also run Device and CacheNet on this second sequence (random-length class runs) on the
    /// first link ("": none).
    #[arg(long, default_value = "segments")]
    compare_sequence: String,
    /// Element backends to compare on the first link (comma-separated: auto, direct, tract,
    /// onnxruntime): Device and CacheNet with `backend=X` each, with their swap costs ("":
    /// none; onnxruntime needs a build with the onnxruntime feature and ORT_DYLIB_PATH).
    #[arg(long, default_value = "")]
    backends: String,
    /// Drift scenario on these sequences (comma-separated: known orders such as camera and
    /// grouped, or frame folders), first link: Device, CacheNet at its fixed threshold, and
    /// CacheNet calibrated (target-agreement), the CacheNet runs interleaved --drift-runs times
    /// ("": none).
    #[arg(long, default_value = "")]
    drift: String,
    #[arg(long, default_value_t = 3)]
    drift_runs: usize,
    /// target-agreement of the calibrated runs.
    #[arg(long, default_value_t = 0.97)]
    drift_target: f64,
    /// audit-interval of both CacheNet runs of the drift scenario.
    #[arg(long, default_value_t = 50)]
    drift_audit_interval: u32,
    /// Only the drift scenario (drift.md, drift.json): no link tables, sweep, cache sizes,
    /// overhead or engine timings.
    #[arg(long)]
    drift_only: bool,
    /// Output folder.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// Only time each model on the engine, tract's plan and onnxruntime (no pipelines, no edge), into
    /// engines.md / engines.json.
    #[arg(long)]
    engines_only: bool,
}

/// A comma-separated list; "" is the empty list.
fn list<T: std::str::FromStr>(s: &str) -> Result<Vec<T>, String>
where
    T::Err: std::fmt::Display,
{
    s.split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| v.parse::<T>().map_err(|e| format!("{v:?}: {e}")))
        .collect()
}

fn exe_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("target/debug"))
}

fn frames_folder(a: &Args, sequence: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(sequence);
    if p.join("labels.csv").exists() {
        return Ok(p);
    }
    if !["grouped", "segments", "shuffled", "camera"].contains(&sequence) {
        return Err(format!(
            "--sequence {sequence}: not a frame folder with labels.csv nor a known order"
        ));
    }
    let dir = PathBuf::from(format!(".data/bench-{sequence}-{}-{}", a.frames, a.seed));
    if !dir.join("labels.csv").exists() {
        eprintln!(
            "generating the {sequence} replay ({} frames) in {}",
            a.frames,
            dir.display()
        );
        let abs = std::env::current_dir()
            .map_err(|e| e.to_string())?
            .join(&dir);
        let st = Command::new("python3")
            .args([
                "-m",
                "cachenet_train",
                "replay",
                "--order",
                sequence,
                "--seed",
                &a.seed.to_string(),
            ])
            .args(["--limit", &a.frames.to_string(), "--out"])
            .arg(&abs)
            .current_dir("models")
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("python3: {e}"))?;
        if !st.success() {
            return Err("generating the replay failed".into());
        }
    }
    Ok(dir)
}

fn read_labels(dir: &Path) -> Result<Vec<i32>, String> {
    let text = std::fs::read_to_string(dir.join("labels.csv")).map_err(|e| e.to_string())?;
    Ok(text
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').nth(1)?.parse().ok())
        .collect())
}

fn edge_bytes(agent: &ureq::Agent, edge: &str) -> (u64, u64) {
    let text = agent
        .get(format!("{edge}/metrics"))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
        .unwrap_or_default();
    let get = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0)
    };
    (
        get("cachenet_bytes_in_total"),
        get("cachenet_bytes_out_total"),
    )
}

/// Messages, resource use and (bytes up, bytes down) of one pipeline run.
type RunOutput = (Vec<report::FrameMsg>, report::Usage, (u64, u64));

struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    // `cachenet-bench fleet ...`: many cameras against several edges (its own flags).
    if std::env::args().nth(1).as_deref() == Some("fleet") {
        let args =
            std::iter::once("cachenet-bench fleet".to_string()).chain(std::env::args().skip(2));
        if let Err(e) = cachenet_bench::fleet::main(args) {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
        return;
    }
    if let Err(e) = real_main() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// The engine (and tract's plan) against onnxruntime on every classifier of the model set (no CPU limit).
fn engines(a: &Args) -> Result<Vec<cachenet_bench::engines::EngineRow>, String> {
    eprintln!(
        "[engines] engine, tract's plan and onnxruntime, one thread, pinned to CPU 0, 5 x 100 runs per model ..."
    );
    // Pinned (threads and children alike): a thread that migrates between cores measures up
    // to 1.5 x slower, and not the same for both engines.
    let pinned = which("taskset")
        && Command::new("taskset")
            .args(["-a", "-cp", "0", &std::process::id().to_string()])
            .output()
            .is_ok_and(|o| o.status.success());
    if !pinned {
        eprintln!("warning: taskset failed: engine timings are not pinned to one CPU");
    }
    cachenet_bench::engines::compare(&a.model_dir, 100)
}

fn link_of(name: &str) -> Result<Option<Link>, String> {
    if name == "none" {
        return Ok(None);
    }
    Link::named(name)
        .map(Some)
        .ok_or_else(|| format!("unknown --link {name}"))
}

fn real_main() -> Result<(), String> {
    let a = Args::parse();
    if a.engines_only {
        std::fs::create_dir_all(&a.out).map_err(|e| format!("--out: {e}"))?;
        let rows = engines(&a)?;
        std::fs::write(
            a.out.join("engines.json"),
            serde_json::to_vec_pretty(&rows).expect("json"),
        )
        .map_err(|e| e.to_string())?;
        let md = cachenet_bench::engines::markdown(&rows);
        std::fs::write(a.out.join("engines.md"), &md).map_err(|e| e.to_string())?;
        println!("{md}");
        return Ok(());
    }
    let sweep_ts: Vec<f64> = list(&a.sweep).map_err(|e| format!("--sweep: {e}"))?;
    let cache_sizes: Vec<u32> = list(&a.cache_sizes).map_err(|e| format!("--cache-sizes: {e}"))?;
    let links: Vec<Option<Link>> = match (a.rtt_ms, a.mbps) {
        (Some(rtt_ms), Some(mbps)) => vec![Some(Link {
            name: "custom".into(),
            rtt_ms,
            mbps,
        })],
        (Some(_), None) | (None, Some(_)) => return Err("--rtt-ms and --mbps go together".into()),
        (None, None) => a
            .link
            .iter()
            .map(|l| link_of(l))
            .collect::<Result<_, _>>()?,
    };
    if links.is_empty() {
        return Err("--link: name at least one link".into());
    }
    let frames = frames_folder(&a, &a.sequence)?;
    let labels = read_labels(&frames)?;
    let n = labels.len();
    std::fs::create_dir_all(&a.out).map_err(|e| format!("--out: {e}"))?;
    let bin = exe_dir();
    let build = if bin.ends_with("release") {
        "release"
    } else {
        eprintln!(
            "warning: {} is not a release build: speed figures are not representative \
             (cargo build --release --workspace, then target/release/cachenet-bench)",
            bin.display()
        );
        "debug"
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let edge_url = format!("http://127.0.0.1:{port}");
    let pin = which("taskset");
    let mut edge_cmd = Command::new(bin.join("cachenet-edge"));
    let edge = Kill(
        edge_cmd
            .arg("--model-dir")
            .arg(&a.model_dir)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--workers", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cachenet-edge ({}): {e}", bin.display()))?,
    );
    let edge_pid = edge.0.id();
    if pin {
        // The edge on CPU 1, the device pipeline on CPU 0.
        let _ = Command::new("taskset")
            .args(["-a", "-p", "-c", "1", &edge_pid.to_string()])
            .stdout(Stdio::null())
            .status();
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into();
    let t = Instant::now();
    while agent
        .get(format!("{edge_url}/health/ready"))
        .call()
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        if t.elapsed() > Duration::from_secs(60) {
            return Err("cachenet-edge did not become ready".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if pin {
        let _ = Command::new("taskset")
            .args(["-a", "-p", "-c", "1", &edge_pid.to_string()])
            .stdout(Stdio::null())
            .status();
    }
    let mut proxies = Vec::new();
    for l in &links {
        proxies.push(match l {
            Some(l) => Some(
                Proxy::start(
                    format!("127.0.0.1:{port}").parse().expect("addr"),
                    l.clone(),
                )
                .map_err(|e| e.to_string())?,
            ),
            None => None,
        });
    }
    let url_of = |i: usize| {
        proxies[i]
            .as_ref()
            .map_or(edge_url.clone(), |p| format!("http://{}", p.addr()))
    };
    let fraction = (a.device_cpu > 0.0).then_some(a.device_cpu);
    let (limit, warn) = CpuLimit::new(fraction);
    if let Some(w) = &warn {
        eprintln!("warning: {w}");
    }
    let envs = vec![("GST_PLUGIN_PATH".to_string(), bin.display().to_string())];
    // One pipeline run: (messages, swap messages, usage, bytes, edge CPU seconds).
    let run = |dir: &Path,
               count: usize,
               mode: &str,
               url: &str,
               extra: &[String]|
     -> Result<(RunOutput, Vec<report::SwapMsg>, f64, report::AuditCounts), String> {
        let mut args: Vec<String> = vec![
            "-m".into(),
            "multifilesrc".into(),
            format!("location={}/frame-%05d.png", dir.display()),
            "index=0".into(),
            format!("stop-index={}", count - 1),
            "caps=image/png,framerate=30/1".into(),
            "!".into(),
            "pngdec".into(),
            "!".into(),
            "videoconvert".into(),
            "!".into(),
            "cachenetclassify".into(),
            format!("mode={mode}"),
            format!("edge-url={url}"),
            format!("model-dir={}", a.model_dir.display()),
            "timeout-ms=5000".into(),
            format!("offload={}", a.offload),
            format!("prefetch={}", a.prefetch),
        ];
        args.extend(extra.iter().cloned());
        args.extend(["!".into(), "fakesink".into(), "sync=false".into()]);
        let before = edge_bytes(&agent, &edge_url);
        let cpu_before = cachenet_bench::run::cpu_seconds(edge_pid);
        let (stdout, usage, ok) = run_measured(
            "gst-launch-1.0",
            &args,
            &envs,
            &limit,
            pin.then_some(0),
            Duration::from_secs(3600),
        )
        .map_err(|e| e.to_string())?;
        let edge_cpu = cachenet_bench::run::cpu_seconds(edge_pid) - cpu_before;
        let after = edge_bytes(&agent, &edge_url);
        let msgs = report::parse_messages(&stdout);
        if !ok || msgs.len() != count {
            return Err(format!(
                "{mode}: the pipeline produced {} of {count} results",
                msgs.len()
            ));
        }
        let swaps = report::parse_swaps(&stdout);
        let audits = report::parse_audits(&stdout).unwrap_or_default();
        Ok((
            (msgs, usage, (after.0 - before.0, after.1 - before.1)),
            swaps,
            edge_cpu,
            audits,
        ))
    };
    let mut modes = a.modes.clone();
    // The device run gives the full model's answers for the agreement column: run it first.
    modes.sort_by_key(|m| m != "device");
    let mut step = 0;
    let mut measure = |what: &str,
                       dir: &Path,
                       labels: &[i32],
                       reference: &mut Option<Vec<i32>>,
                       mode: &str,
                       url: &str,
                       threshold: Option<f64>,
                       extra: Vec<String>|
     -> Result<ModeReport, String> {
        step += 1;
        let count = labels.len();
        eprintln!(
            "[{step}] {what}: {mode} {} ({count} frames) ...",
            extra.join(" ")
        );
        let mut extra = extra;
        if let Some(t) = threshold {
            extra.push(format!("threshold={t}"));
        }
        let ((msgs, usage, bytes), swaps, edge_cpu, audits) = run(dir, count, mode, url, &extra)?;
        if mode == "device" {
            let mut r = vec![-1; count];
            for m in &msgs {
                r[m.frame as usize] = m.class_id;
            }
            *reference = Some(r);
        }
        let mut row = report::summarize(
            mode,
            threshold,
            &msgs,
            labels,
            reference.as_deref(),
            usage,
            bytes,
        )
        .with_edge_cpu(edge_cpu);
        row.swap_costs = report::summarize_swaps(&swaps);
        row.audits = audits;
        eprintln!(
            "    {:.1} FPS (pipeline), {:.1} element FPS, accuracy {:.2} %, hit rate {:.1} %",
            row.fps,
            row.fps_element,
            100.0 * row.accuracy,
            100.0 * row.hit_rate
        );
        Ok(row)
    };
    let link_name = |l: &Option<Link>| l.as_ref().map_or("none".to_string(), |l| l.name.clone());
    let drift_seqs: Vec<String> = list(&a.drift).map_err(|e| format!("--drift: {e}"))?;
    let mut drift_rows: Vec<(String, Vec<ModeReport>)> = Vec::new();
    for seq in &drift_seqs {
        let dir = frames_folder(&a, seq)?;
        let labels = read_labels(&dir)?;
        let mut reference = None;
        let first = link_name(&links[0]);
        let device = measure(
            &first,
            &dir,
            &labels,
            &mut reference,
            "device",
            &url_of(0),
            None,
            vec![],
        )?;
        let audit = format!("audit-interval={}", a.drift_audit_interval);
        let variants = [
            ("cachenet, fixed threshold".to_string(), vec![audit.clone()]),
            (
                format!("cachenet, target-agreement {}", a.drift_target),
                vec![
                    audit.clone(),
                    format!("target-agreement={}", a.drift_target),
                ],
            ),
        ];
        // Interleaved: fixed, calibrated, fixed, calibrated, ...
        let mut runs: Vec<Vec<ModeReport>> = vec![Vec::new(); variants.len()];
        for _ in 0..a.drift_runs.max(1) {
            for (i, (_, extra)) in variants.iter().enumerate() {
                runs[i].push(measure(
                    &first,
                    &dir,
                    &labels,
                    &mut reference,
                    "cachenet",
                    &url_of(0),
                    None,
                    extra.clone(),
                )?);
            }
        }
        let mut rows = vec![device];
        for ((name, _), r) in variants.iter().zip(runs) {
            let mut row = report::median_run(r);
            row.mode = name.clone();
            rows.push(row);
        }
        drift_rows.push((seq.clone(), rows));
    }
    if !drift_rows.is_empty() {
        let md = report::drift_markdown(&drift_rows, a.drift_runs.max(1), a.drift_audit_interval);
        let cpu_text = limit.fraction.map_or("no CPU limit".to_string(), |f| {
            format!("device CPU {f} of one core")
        });
        let md = format!(
            "Drift scenario, link {}, {cpu_text}, {build} build, model set {}.\n\n{md}",
            link_name(&links[0]),
            a.model_dir.display()
        );
        std::fs::write(a.out.join("drift.md"), &md).map_err(|e| e.to_string())?;
        let json: serde_json::Map<String, serde_json::Value> = drift_rows
            .iter()
            .map(|(s, rows)| (s.clone(), serde_json::json!(rows)))
            .collect();
        std::fs::write(
            a.out.join("drift.json"),
            serde_json::to_vec_pretty(&json).expect("json"),
        )
        .map_err(|e| e.to_string())?;
        println!("{md}");
    }
    if a.drift_only {
        return Ok(());
    }
    // Device and submodel-only never touch the network: measured once, shown in every link's
    // table; Edge and CacheNet per link.
    let mut reference = None;
    let mut local_rows = Vec::new();
    for m in modes
        .iter()
        .filter(|m| *m == "device" || *m == "submodel-only")
    {
        local_rows.push(measure(
            "local",
            &frames,
            &labels,
            &mut reference,
            m,
            &url_of(0),
            None,
            vec![],
        )?);
    }
    let mut per_link: Vec<(String, Vec<ModeReport>)> = Vec::new();
    for (i, l) in links.iter().enumerate() {
        let mut rows: Vec<ModeReport> = Vec::new();
        for m in &modes {
            if m == "device" || m == "submodel-only" {
                rows.push(
                    local_rows
                        .iter()
                        .find(|r| &r.mode == m)
                        .expect("measured")
                        .clone(),
                );
            } else {
                rows.push(measure(
                    &link_name(l),
                    &frames,
                    &labels,
                    &mut reference,
                    m,
                    &url_of(i),
                    None,
                    vec![],
                )?);
            }
        }
        per_link.push((link_name(l), rows));
    }
    let first = link_name(&links[0]);
    let backend_list: Vec<String> = list(&a.backends).map_err(|e| format!("--backends: {e}"))?;
    let mut backend_rows = Vec::new();
    for b in &backend_list {
        let mut reference_b = reference.clone();
        for m in ["device", "cachenet"] {
            let mut row = measure(
                &first,
                &frames,
                &labels,
                &mut reference_b,
                m,
                &url_of(0),
                None,
                vec![format!("backend={b}")],
            )?;
            row.mode = format!("{m}, backend={b}");
            backend_rows.push(row);
        }
    }
    // The sweep and the cache sizes: CacheNet on the first link with one setting changed.
    let (sweep, cache_rows) = {
        let mut on_first = |threshold: Option<f64>, extra: Vec<String>| {
            let url = url_of(0);
            measure(
                &first,
                &frames,
                &labels,
                &mut reference,
                "cachenet",
                &url,
                threshold,
                extra,
            )
        };
        let sweep = sweep_ts
            .iter()
            .map(|&t| on_first(Some(t), vec![]))
            .collect::<Result<Vec<_>, _>>()?;
        let cache_rows = cache_sizes
            .iter()
            .map(|&c| {
                let mut row = on_first(None, vec![format!("cache-size={c}")])?;
                row.mode = format!("cachenet cache-size={c}");
                Ok::<_, String>(row)
            })
            .collect::<Result<Vec<_>, _>>()?;
        (sweep, cache_rows)
    };
    let mut compare_rows = Vec::new();
    if !a.compare_sequence.is_empty() {
        let dir2 = frames_folder(&a, &a.compare_sequence)?;
        let labels2 = read_labels(&dir2)?;
        let mut reference2 = None;
        for m in ["device", "cachenet"] {
            let mut row = measure(
                &first,
                &dir2,
                &labels2,
                &mut reference2,
                m,
                &url_of(0),
                None,
                vec![],
            )?;
            row.mode = format!("{m} ({})", a.compare_sequence);
            compare_rows.push(row);
        }
    }
    // The element's own overhead (scaling, conversion, metadata, messages) at 640x480 RGB, on
    // the default backend and on each of --backends.
    let overhead_of = |backend: Option<&str>| -> Result<(f64, f64), String> {
        eprintln!(
            "[overhead] submodel-only on 300 frames of 640x480 RGB{} ...",
            backend.map_or(String::new(), |b| format!(", backend={b}"))
        );
        let overhead_args: Vec<String> = [
            "-m",
            "videotestsrc",
            "num-buffers=300",
            "pattern=smpte",
            "!",
            "video/x-raw,format=RGB,width=640,height=480,framerate=30/1",
            "!",
            "cachenetclassify",
            "mode=submodel-only",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(backend.map(|b| format!("backend={b}")))
        .chain([
            format!("model-dir={}", a.model_dir.display()),
            "!".into(),
            "fakesink".into(),
        ])
        .collect();
        // Pinned to one CPU but without the quota: a throttled period (75 ms at 0.25 CPU) lands in
        // whichever part of a frame it hits, and a few of them would decide the share.
        let (unlimited, _) = CpuLimit::new(None);
        let (stdout, _, ok) = run_measured(
            "gst-launch-1.0",
            &overhead_args,
            &envs,
            &unlimited,
            pin.then_some(0),
            Duration::from_secs(600),
        )
        .map_err(|e| e.to_string())?;
        let msgs = report::parse_messages(&stdout);
        if !ok || msgs.is_empty() {
            return Err("the 640x480 overhead pipeline failed".into());
        }
        let overhead = report::summarize(
            "overhead",
            None,
            &msgs,
            &[],
            None,
            Default::default(),
            (0, 0),
        );
        let per_frame_us =
            msgs.iter().map(|m| m.latency_us).sum::<u64>() as f64 / msgs.len() as f64;
        eprintln!(
            "    overhead {:.2} % of {per_frame_us:.0} us per frame",
            100.0 * overhead.overhead
        );
        Ok((overhead.overhead, per_frame_us))
    };
    let (overhead_fraction, per_frame_us) = overhead_of(None)?;
    let mut backend_overheads = Vec::new();
    for b in &backend_list {
        let (f, us) = overhead_of(Some(b))?;
        backend_overheads.push(serde_json::json!({
            "backend": b, "fraction": f, "per_frame_us": us, "own_us": f * us,
        }));
    }
    let engine_rows = engines(&a)?;
    // In process, after engines() pinned this process to CPU 0.
    eprintln!("[scaler] the element's scaler at 640x480 RGB, frames in cache and from memory ...");
    let set = cachenet_core::manifest::Manifest::load(&a.model_dir).map_err(|e| e.to_string())?;
    let to = set.submodel_input(0).clone();
    let scaler = cachenet_bench::scaler::time(640, 480, &to)?;
    eprintln!(
        "    {:.1} us cached, {:.1} us from memory; reading a frame alone {:.1} us",
        scaler.cached_us, scaler.memory_us, scaler.read_us
    );
    let headline = per_link[0].1.clone();
    let settings = serde_json::json!({
        "model_dir": a.model_dir, "sequence": a.sequence, "frames": n, "seed": a.seed,
        "device_cpu": limit.fraction, "cpu_limit_warning": warn, "link": links[0],
        "offload": a.offload, "prefetch": a.prefetch,
        "links": links, "pinned": pin, "modes": modes, "build": build,
        "compare_sequence": a.compare_sequence,
    });
    let links_json: serde_json::Map<String, serde_json::Value> = per_link
        .iter()
        .map(|(name, rows)| (name.clone(), serde_json::json!(rows)))
        .collect();
    let json = serde_json::json!({
        "settings": settings, "modes": headline, "links": links_json, "sweep": sweep,
        "cache_sizes": cache_rows, "compare_sequence": compare_rows, "engines": engine_rows,
        "backends": backend_rows,
        "overhead_640x480": { "fraction": overhead_fraction, "per_frame_us": per_frame_us, "frames": 300 },
        "overhead_640x480_backends": backend_overheads,
        "scaler_640x480": scaler,
    });
    let json_path = a.out.join("results.json");
    std::fs::write(&json_path, serde_json::to_vec_pretty(&json).expect("json"))
        .map_err(|e| e.to_string())?;
    let cpu_text = limit.fraction.map_or("no CPU limit".to_string(), |f| {
        format!("device CPU {f} of one core")
    });
    let mut md = format!(
        "Sequence {} ({n} frames), {cpu_text}, {build} build. FPS is the wall clock of the whole \
         pipeline (multifilesrc ! pngdec ! videoconvert ! cachenetclassify ! fakesink, start-up \
         included); element FPS counts the element's own time only. Device and submodel-only \
         do not use the network: measured once, shown under every link.\n",
        a.sequence
    );
    for ((name, rows), l) in per_link.iter().zip(&links) {
        let link_text = l.as_ref().map_or("no link emulation".to_string(), |l| {
            format!("{} ms RTT, {} Mbit/s", l.rtt_ms, l.mbps)
        });
        md.push_str(&format!(
            "\n### Link {name} ({link_text})\n\n{}",
            report::markdown(rows)
        ));
        let fps = |m: &str| rows.iter().find(|r| r.mode == m).map(|r| r.fps);
        if let (Some(c), Some(d), Some(e)) = (fps("cachenet"), fps("device"), fps("edge")) {
            md.push_str(&format!(
                "\nCacheNet: {:.2} x Device, {:.2} x Edge{}.\n",
                c / d,
                c / e,
                fps("submodel-only")
                    .map(|s| format!(", {:.2} x submodel-only", c / s))
                    .unwrap_or_default()
            ));
        }
    }
    md.push_str(&format!(
        "\nElement overhead at 640x480 RGB (everything but the model run, submodel-only, pinned to one CPU without the quota): {:.2} % of {:.0} us per frame.\n",
        100.0 * overhead_fraction,
        per_frame_us
    ));
    for o in &backend_overheads {
        md.push_str(&format!(
            "With backend={}: {:.1} us of {:.0} us per frame are the element's own (everything but the model run).\n",
            o["backend"].as_str().unwrap_or(""),
            o["own_us"].as_f64().unwrap_or(0.0),
            o["per_frame_us"].as_f64().unwrap_or(0.0)
        ));
    }
    md.push_str(&format!(
        "\nThe element's scaler alone (640x480 RGB to the submodels' {}x{} {:?} input, in process, best of rounds): {:.1} us per frame with the frame in cache, {:.1} us with frames from memory; a pass that only reads a frame from memory: {:.1} us.\n",
        to.width, to.height, to.color, scaler.cached_us, scaler.memory_us, scaler.read_us
    ));
    md.push_str(&format!(
        "\nInference engine (no CPU limit): each model as the element runs it (plan direct: the engine's own; tract: tract's), on tract's plan, and on onnxruntime, same file:\n\n{}",
        cachenet_bench::engines::markdown(&engine_rows)
    ));
    if !sweep.is_empty() {
        md.push_str(&format!("\nThreshold sweep (CacheNet, link {first}):\n\n"));
        md.push_str(&report::markdown(&sweep));
    }
    if !backend_rows.is_empty() {
        md.push_str(&format!(
            "\nBackends of the element (link {first}; the edge on its default):\n\n{}",
            report::markdown(&backend_rows)
        ));
    }
    if !cache_rows.is_empty() {
        md.push_str(&format!("\ncache-size (CacheNet, link {first}):\n\n"));
        md.push_str(&report::markdown(&cache_rows));
    }
    if !compare_rows.is_empty() {
        md.push_str(&format!(
            "\nSequence {} (link {first}):\n\n{}",
            a.compare_sequence,
            report::markdown(&compare_rows)
        ));
    }
    let swap_rows: Vec<(String, &ModeReport)> = per_link
        .iter()
        .flat_map(|(name, rows)| {
            rows.iter()
                .map(move |r| (format!("{} ({name})", r.mode), r))
        })
        .chain(cache_rows.iter().map(|r| (r.mode.clone(), r)))
        .chain(backend_rows.iter().map(|r| (r.mode.clone(), r)))
        .filter(|(_, r)| r.swap_costs.fetched + r.swap_costs.plan_reuses > 0)
        .collect();
    if !swap_rows.is_empty() {
        md.push_str(
            "\nSwap costs (medians per fetched submodel; device work = verify + store + parse + \
             optimise + first run on the swap worker, wall clock under the quota; device CPU = the \
             same work as the worker thread's CPU time; wait = miss to submodel usable):\n\n\
             | run | fetched | kept plans reused | download | verify | store | parse | optimise | first run | device work | device CPU | wait |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for (name, r) in &swap_rows {
            let s = &r.swap_costs;
            let ms = |us: u64| format!("{:.1} ms", us as f64 / 1000.0);
            md.push_str(&format!(
                "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                s.fetched,
                s.plan_reuses,
                ms(s.median_download_us),
                ms(s.median_verify_us),
                ms(s.median_store_us),
                ms(s.median_parse_us),
                ms(s.median_optimise_us),
                ms(s.median_first_run_us),
                ms(s.median_device_work_us),
                ms(s.median_device_cpu_us),
                ms(s.median_wait_us)
            ));
        }
    }
    std::fs::write(a.out.join("results.md"), &md).map_err(|e| e.to_string())?;
    println!("{md}");
    let plot = Path::new(env!("CARGO_MANIFEST_DIR")).join("plot.py");
    match Command::new("python3").arg(&plot).arg(&json_path).status() {
        Ok(s) if s.success() => eprintln!(
            "plots: {}/modes.png, {}/sweep.png",
            a.out.display(),
            a.out.display()
        ),
        _ => eprintln!("warning: plotting failed (python3 with matplotlib needed)"),
    }
    Ok(())
}
