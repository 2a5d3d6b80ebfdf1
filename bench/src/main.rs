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
    /// Link profile: ethernet, wifi, lte, none.
    #[arg(long, default_value = "wifi")]
    link: String,
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
    /// Thresholds for the CacheNet sweep (empty: no sweep).
    #[arg(long, value_delimiter = ',', default_value = "0.2,0.6,1.0,1.5")]
    sweep: Vec<f64>,
    /// Output folder.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
}

fn exe_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("target/debug"))
}

fn frames_folder(a: &Args) -> Result<PathBuf, String> {
    let p = PathBuf::from(&a.sequence);
    if p.join("labels.csv").exists() {
        return Ok(p);
    }
    if !["grouped", "segments", "shuffled"].contains(&a.sequence.as_str()) {
        return Err(format!(
            "--sequence {}: not a frame folder with labels.csv nor a known order",
            a.sequence
        ));
    }
    let dir = PathBuf::from(format!(
        ".data/bench-{}-{}-{}",
        a.sequence, a.frames, a.seed
    ));
    if !dir.join("labels.csv").exists() {
        eprintln!(
            "generating the {} replay ({} frames) in {}",
            a.sequence,
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
                &a.sequence,
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
    if let Err(e) = real_main() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<(), String> {
    let a = Args::parse();
    let link = match (a.rtt_ms, a.mbps) {
        (Some(rtt_ms), Some(mbps)) => Some(Link {
            name: "custom".into(),
            rtt_ms,
            mbps,
        }),
        (Some(_), None) | (None, Some(_)) => return Err("--rtt-ms and --mbps go together".into()),
        (None, None) if a.link == "none" => None,
        (None, None) => {
            Some(Link::named(&a.link).ok_or_else(|| format!("unknown --link {}", a.link))?)
        }
    };
    let frames = frames_folder(&a)?;
    let labels = read_labels(&frames)?;
    let n = labels.len();
    std::fs::create_dir_all(&a.out).map_err(|e| format!("--out: {e}"))?;
    let bin = exe_dir();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let edge_url = format!("http://127.0.0.1:{port}");
    let pin = which("taskset");
    let mut edge_cmd = if pin {
        let mut c = Command::new("taskset");
        c.args(["-c", "1"]).arg(bin.join("cachenet-edge"));
        c
    } else {
        Command::new(bin.join("cachenet-edge"))
    };
    let _edge = Kill(
        edge_cmd
            .arg("--model-dir")
            .arg(&a.model_dir)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--workers", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cachenet-edge ({}): {e}", bin.display()))?,
    );
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
    let proxy = match &link {
        Some(l) => Some(
            Proxy::start(
                format!("127.0.0.1:{port}").parse().expect("addr"),
                l.clone(),
            )
            .map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    let device_edge_url = proxy
        .as_ref()
        .map_or(edge_url.clone(), |p| format!("http://{}", p.addr()));
    let fraction = (a.device_cpu > 0.0).then_some(a.device_cpu);
    let (limit, warn) = CpuLimit::new(fraction);
    if let Some(w) = &warn {
        eprintln!("warning: {w}");
    }
    let envs = vec![("GST_PLUGIN_PATH".to_string(), bin.display().to_string())];
    let run = |mode: &str, threshold: Option<f64>| -> Result<RunOutput, String> {
        let mut args: Vec<String> = vec![
            "-m".into(),
            "multifilesrc".into(),
            format!("location={}/frame-%05d.png", frames.display()),
            "index=0".into(),
            format!("stop-index={}", n - 1),
            "caps=image/png,framerate=30/1".into(),
            "!".into(),
            "pngdec".into(),
            "!".into(),
            "videoconvert".into(),
            "!".into(),
            "cachenetclassify".into(),
            format!("mode={mode}"),
            format!("edge-url={device_edge_url}"),
            format!("model-dir={}", a.model_dir.display()),
            "timeout-ms=5000".into(),
        ];
        if let Some(t) = threshold {
            args.push(format!("threshold={t}"));
        }
        args.extend(["!".into(), "fakesink".into(), "sync=false".into()]);
        let before = edge_bytes(&agent, &edge_url);
        let (stdout, usage, ok) = run_measured(
            "gst-launch-1.0",
            &args,
            &envs,
            &limit,
            pin.then_some(0),
            Duration::from_secs(3600),
        )
        .map_err(|e| e.to_string())?;
        let after = edge_bytes(&agent, &edge_url);
        let msgs = report::parse_messages(&stdout);
        if !ok || msgs.len() != n {
            return Err(format!(
                "{mode}: the pipeline produced {} of {n} results",
                msgs.len()
            ));
        }
        Ok((msgs, usage, (after.0 - before.0, after.1 - before.1)))
    };
    let mut reference: Option<Vec<i32>> = None;
    let mut modes = a.modes.clone();
    // The device run gives the full model's answers for the agreement column: run it first.
    modes.sort_by_key(|m| m != "device");
    let total = modes.len() + a.sweep.len();
    let mut measure =
        |step: usize, mode: &str, threshold: Option<f64>| -> Result<ModeReport, String> {
            let t = threshold
                .map(|t| format!(" at T = {t}"))
                .unwrap_or_default();
            eprintln!("[{step}/{total}] {mode}{t}: {n} frames ...");
            let (msgs, usage, bytes) = run(mode, threshold)?;
            if mode == "device" {
                let mut r = vec![-1; n];
                for m in &msgs {
                    r[m.frame as usize] = m.class_id;
                }
                reference = Some(r);
            }
            let row = report::summarize(
                mode,
                threshold,
                &msgs,
                &labels,
                reference.as_deref(),
                usage,
                bytes,
            );
            eprintln!(
                "    {:.1} FPS, accuracy {:.2} %, hit rate {:.1} %",
                row.fps,
                100.0 * row.accuracy,
                100.0 * row.hit_rate
            );
            Ok(row)
        };
    let mut rows: Vec<ModeReport> = Vec::new();
    for (i, mode) in modes.iter().enumerate() {
        rows.push(measure(i + 1, mode, None)?);
    }
    let mut sweep = Vec::new();
    for (i, &t) in a.sweep.iter().enumerate() {
        sweep.push(measure(modes.len() + i + 1, "cachenet", Some(t))?);
    }
    // The element's own overhead (scaling, conversion, metadata, messages) at 640x480 RGB.
    eprintln!("[overhead] submodel-only on 300 frames of 640x480 RGB ...");
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
    .chain([
        format!("model-dir={}", a.model_dir.display()),
        "!".into(),
        "fakesink".into(),
    ])
    .collect();
    let (stdout, _, ok) = run_measured(
        "gst-launch-1.0",
        &overhead_args,
        &envs,
        &limit,
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
    let per_frame_us = msgs.iter().map(|m| m.latency_us).sum::<u64>() as f64 / msgs.len() as f64;
    eprintln!(
        "    overhead {:.2} % of {per_frame_us:.0} us per frame",
        100.0 * overhead.overhead
    );
    let settings = serde_json::json!({
        "model_dir": a.model_dir, "sequence": a.sequence, "frames": n, "seed": a.seed,
        "device_cpu": limit.fraction, "cpu_limit_warning": warn, "link": link,
        "pinned": pin, "modes": modes,
    });
    let json = serde_json::json!({
        "settings": settings, "modes": rows, "sweep": sweep,
        "overhead_640x480": { "fraction": overhead.overhead, "per_frame_us": per_frame_us, "frames": msgs.len() },
    });
    let json_path = a.out.join("results.json");
    std::fs::write(&json_path, serde_json::to_vec_pretty(&json).expect("json"))
        .map_err(|e| e.to_string())?;
    let link_text = link.as_ref().map_or("no link emulation".to_string(), |l| {
        format!("link {} ({} ms RTT, {} Mbit/s)", l.name, l.rtt_ms, l.mbps)
    });
    let cpu_text = limit.fraction.map_or("no CPU limit".to_string(), |f| {
        format!("device CPU {f} of one core")
    });
    let mut md = format!(
        "Sequence {} ({n} frames), {cpu_text}, {link_text}.\n\n{}",
        a.sequence,
        report::markdown(&rows)
    );
    md.push_str(&format!(
        "\nElement overhead at 640x480 RGB (everything but the model run, submodel-only): {:.2} % of {:.0} us per frame.\n",
        100.0 * overhead.overhead,
        per_frame_us
    ));
    if !sweep.is_empty() {
        md.push_str("\nThreshold sweep (CacheNet):\n\n");
        md.push_str(&report::markdown(&sweep));
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
