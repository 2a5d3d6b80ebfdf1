//! Per-frame messages -> the paper's numbers, and the markdown table.

use serde::Serialize;

/// One `cachenet-result` message, as printed by `gst-launch-1.0 -m`.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameMsg {
    pub frame: u64,
    pub class_id: i32,
    pub source: String,
    pub hit: bool,
    pub submodel: i32,
    pub degraded: bool,
    pub latency_us: u64,
    pub inference_us: u64,
}

fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=(");
    let start = line.find(&key)? + key.len();
    let rest = &line[start..];
    let close = rest.find(')')?;
    let value = &rest[close + 1..];
    let end = value.find([',', ';']).unwrap_or(value.len());
    Some(value[..end].trim_matches('"'))
}

/// Parse every `cachenet-result` line of `gst-launch-1.0 -m` output.
pub fn parse_messages(text: &str) -> Vec<FrameMsg> {
    text.lines()
        .filter(|l| l.contains("cachenet-result"))
        .filter_map(|l| {
            Some(FrameMsg {
                frame: field(l, "frame")?.parse().ok()?,
                class_id: field(l, "class-id")?.parse().ok()?,
                source: field(l, "source")?.to_string(),
                hit: field(l, "hit")? == "true",
                submodel: field(l, "submodel")?.parse().ok()?,
                degraded: field(l, "degraded")? == "true",
                latency_us: field(l, "latency-us")?.parse().ok()?,
                inference_us: field(l, "inference-us")?.parse().ok()?,
            })
        })
        .collect()
}

/// The audit counters of a run, from the element's `cachenet-stats` message at end of stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct AuditCounts {
    pub sent: u64,
    pub answered: u64,
    pub agree: u64,
    pub dropped: u64,
    /// The threshold in use for the active submodel at the end.
    pub final_threshold: f64,
}

/// The audit counters of the last `cachenet-stats` line of `gst-launch-1.0 -m` output.
pub fn parse_audits(text: &str) -> Option<AuditCounts> {
    let l = text.lines().rev().find(|l| l.contains("cachenet-stats"))?;
    let num = |n: &str| field(l, n).and_then(|v| v.parse().ok());
    Some(AuditCounts {
        sent: num("audits-sent")?,
        answered: num("audits")?,
        agree: num("audit-agree")?,
        dropped: num("audits-dropped")?,
        final_threshold: field(l, "threshold")?.parse().ok()?,
    })
}

/// One `cachenet-swap` message: a submodel became usable.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SwapMsg {
    pub submodel: u32,
    pub fetched: bool,
    pub bytes: u64,
    pub download_us: u64,
    pub verify_us: u64,
    pub store_us: u64,
    pub parse_us: u64,
    pub optimise_us: u64,
    pub first_run_us: u64,
    /// The swap worker's CPU time for verify .. first run.
    pub cpu_us: u64,
    /// From the miss that asked for it to the frame where it became usable.
    pub wait_us: u64,
}

/// Parse every `cachenet-swap` line of `gst-launch-1.0 -m` output.
pub fn parse_swaps(text: &str) -> Vec<SwapMsg> {
    let num = |l: &str, n: &str| field(l, n).and_then(|v| v.parse().ok()).unwrap_or(0);
    text.lines()
        .filter(|l| l.contains("cachenet-swap"))
        .filter_map(|l| {
            Some(SwapMsg {
                submodel: field(l, "submodel")?.parse().ok()?,
                fetched: field(l, "fetched")? == "true",
                bytes: num(l, "bytes"),
                download_us: num(l, "download-us"),
                verify_us: num(l, "verify-us"),
                store_us: num(l, "store-us"),
                parse_us: num(l, "parse-us"),
                optimise_us: num(l, "optimise-us"),
                first_run_us: num(l, "first-run-us"),
                cpu_us: num(l, "cpu-us"),
                wait_us: num(l, "wait-us"),
            })
        })
        .collect()
}

/// Swap costs of one run: medians per fetched submodel (device side, microseconds).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SwapSummary {
    pub fetched: usize,
    pub plan_reuses: usize,
    pub median_download_us: u64,
    pub median_verify_us: u64,
    pub median_store_us: u64,
    pub median_parse_us: u64,
    pub median_optimise_us: u64,
    pub median_first_run_us: u64,
    /// Device work of a swap, wall clock: verify + store + parse + optimise + first run (under
    /// a CPU quota it holds the throttled periods).
    pub median_device_work_us: u64,
    /// The same work as the device's CPU time (the swap worker thread's run time).
    pub median_device_cpu_us: u64,
    /// Miss to new submodel usable (wall clock, network included).
    pub median_wait_us: u64,
}

fn median(mut v: Vec<u64>) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[v.len() / 2]
}

pub fn summarize_swaps(swaps: &[SwapMsg]) -> SwapSummary {
    let f: Vec<&SwapMsg> = swaps.iter().filter(|s| s.fetched).collect();
    let m = |g: &dyn Fn(&SwapMsg) -> u64| median(f.iter().map(|s| g(s)).collect());
    SwapSummary {
        fetched: f.len(),
        plan_reuses: swaps.iter().filter(|s| !s.fetched).count(),
        median_download_us: m(&|s| s.download_us),
        median_verify_us: m(&|s| s.verify_us),
        median_store_us: m(&|s| s.store_us),
        median_parse_us: m(&|s| s.parse_us),
        median_optimise_us: m(&|s| s.optimise_us),
        median_first_run_us: m(&|s| s.first_run_us),
        median_device_work_us: m(&|s| {
            s.verify_us + s.store_us + s.parse_us + s.optimise_us + s.first_run_us
        }),
        median_device_cpu_us: m(&|s| s.cpu_us),
        median_wait_us: m(&|s| s.wait_us),
    }
}

/// Resource use of the device process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Usage {
    pub wall_s: f64,
    pub cpu_s: f64,
    pub peak_rss_kb: u64,
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModeReport {
    pub mode: String,
    pub threshold: Option<f64>,
    pub frames: usize,
    /// Frames per second of the whole pipeline run, wall clock (start-up, decode and
    /// conversion included): the headline figure.
    pub fps: f64,
    /// Frames per second of the element alone (sum of its per-frame latencies).
    pub fps_element: f64,
    pub accuracy: f64,
    /// Agreement with the full model's answers (the device run), when known.
    pub agreement: Option<f64>,
    pub hit_rate: f64,
    pub cpu_percent: f64,
    pub peak_rss_mb: f64,
    pub device_time_s: f64,
    pub edge_time_s: f64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub swaps: usize,
    pub degraded: usize,
    /// Share of the element's time that is not model runs or edge requests.
    pub overhead: f64,
    /// CPU seconds the edge server spent per 1000 frames of this run.
    pub edge_cpu_s_per_1000: f64,
    /// Cameras at 30 FPS one edge core carries in this mode (1000 / 30 / edge CPU per 1000).
    pub cameras_per_edge_core: Option<f64>,
    pub swap_costs: SwapSummary,
    /// Audits of hits (the element's counters at end of stream).
    pub audits: AuditCounts,
}

/// Summarise one run. `labels[frame]` is the true class; `reference[frame]` the full model's.
#[allow(clippy::too_many_arguments)]
pub fn summarize(
    mode: &str,
    threshold: Option<f64>,
    msgs: &[FrameMsg],
    labels: &[i32],
    reference: Option<&[i32]>,
    usage: Usage,
    bytes: (u64, u64),
) -> ModeReport {
    let n = msgs.len().max(1) as f64;
    let at = |v: &[i32], f: u64| v.get(f as usize).copied();
    let correct = msgs
        .iter()
        .filter(|m| at(labels, m.frame) == Some(m.class_id))
        .count();
    let agreement = reference.map(|r| {
        msgs.iter()
            .filter(|m| at(r, m.frame) == Some(m.class_id))
            .count() as f64
            / n
    });
    let total_us: u64 = msgs.iter().map(|m| m.latency_us).sum();
    let inference_us: u64 = msgs.iter().map(|m| m.inference_us.min(m.latency_us)).sum();
    let edge_us: u64 = msgs
        .iter()
        .filter(|m| m.source == "edge")
        .map(|m| m.latency_us)
        .sum();
    let swaps = msgs
        .windows(2)
        .filter(|w| w[0].submodel != w[1].submodel && w[1].submodel >= 0)
        .count();
    ModeReport {
        mode: mode.into(),
        threshold,
        frames: msgs.len(),
        fps: if usage.wall_s > 0.0 {
            msgs.len() as f64 / usage.wall_s
        } else {
            0.0
        },
        fps_element: if total_us > 0 {
            msgs.len() as f64 / (total_us as f64 / 1e6)
        } else {
            0.0
        },
        accuracy: correct as f64 / n,
        agreement,
        hit_rate: msgs.iter().filter(|m| m.hit).count() as f64 / n,
        cpu_percent: if usage.wall_s > 0.0 {
            100.0 * usage.cpu_s / usage.wall_s
        } else {
            0.0
        },
        peak_rss_mb: usage.peak_rss_kb as f64 / 1024.0,
        device_time_s: (total_us - edge_us) as f64 / 1e6,
        edge_time_s: edge_us as f64 / 1e6,
        bytes_up: bytes.0,
        bytes_down: bytes.1,
        swaps,
        degraded: msgs.iter().filter(|m| m.degraded).count(),
        overhead: if total_us > 0 {
            1.0 - inference_us as f64 / total_us as f64
        } else {
            0.0
        },
        edge_cpu_s_per_1000: 0.0,
        cameras_per_edge_core: None,
        swap_costs: SwapSummary::default(),
        audits: AuditCounts::default(),
    }
}

impl ModeReport {
    /// Record the edge server's CPU time for this run.
    pub fn with_edge_cpu(mut self, edge_cpu_s: f64) -> Self {
        let per_1000 = edge_cpu_s * 1000.0 / self.frames.max(1) as f64;
        self.edge_cpu_s_per_1000 = per_1000;
        self.cameras_per_edge_core = (per_1000 > 1e-3).then(|| 1000.0 / 30.0 / per_1000);
        self
    }
}

/// The paper's Table 1 shape: FPS is the whole pipeline's wall clock; "element FPS" counts
/// the element's own time only.
pub fn markdown(rows: &[ModeReport]) -> String {
    let mut s = String::from(
        "| mode | FPS (pipeline, wall clock) | element FPS | accuracy | agreement with full | hit rate | device CPU | peak memory | device time | edge time (network incl.) | bytes up / down | swaps | edge CPU / 1000 frames | cameras per edge core |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let mode = match r.threshold {
            Some(t) => format!("{} (T = {t})", r.mode),
            None => r.mode.clone(),
        };
        s.push_str(&format!(
            "| {mode} | {:.1} | {:.1} | {:.2} % | {} | {:.1} % | {:.0} % | {:.0} MB | {:.2} s | {:.2} s | {} / {} | {} | {:.2} s | {} |\n",
            r.fps,
            r.fps_element,
            100.0 * r.accuracy,
            r.agreement.map(|a| format!("{:.2} %", 100.0 * a)).unwrap_or_else(|| "–".into()),
            100.0 * r.hit_rate,
            r.cpu_percent,
            r.peak_rss_mb,
            r.device_time_s,
            r.edge_time_s,
            r.bytes_up,
            r.bytes_down,
            r.swaps,
            r.edge_cpu_s_per_1000,
            r.cameras_per_edge_core
                .map(|c| format!("{c:.0}"))
                .unwrap_or_else(|| "–".into())
        ));
    }
    s
}

/// One row for repeated runs of one setting: the run of median FPS, with the median of each
/// rate over all runs (accuracy, agreement, hit rate).
pub fn median_run(mut runs: Vec<ModeReport>) -> ModeReport {
    assert!(!runs.is_empty(), "at least one run");
    let med = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let accuracy = med(runs.iter().map(|r| r.accuracy).collect());
    let hit_rate = med(runs.iter().map(|r| r.hit_rate).collect());
    let agreement = runs
        .iter()
        .map(|r| r.agreement)
        .collect::<Option<Vec<f64>>>()
        .map(med);
    runs.sort_by(|a, b| a.fps.total_cmp(&b.fps));
    let mut row = runs.swap_remove(runs.len() / 2);
    row.accuracy = accuracy;
    row.hit_rate = hit_rate;
    row.agreement = agreement;
    row
}

/// The drift scenario's table: per sequence, Device and the CacheNet settings.
pub fn drift_markdown(rows: &[(String, Vec<ModeReport>)], runs: usize, interval: u32) -> String {
    let mut s = format!(
        "CacheNet rows: medians of {runs} interleaved runs, audit-interval {interval}. Agreement \
         is with the full model's answers (the Device run); audits % = edge requests from audits \
         per frame.\n\n\
         | sequence | run | FPS (pipeline) | accuracy | agreement with full | hit rate | audits sent | audits dropped | audits % of frames | audited agreement | threshold at the end |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n"
    );
    for (seq, rows) in rows {
        for r in rows {
            let a = &r.audits;
            let cachenet = r.mode.starts_with("cachenet");
            let or_dash = |v: String| if cachenet { v } else { "–".into() };
            s.push_str(&format!(
                "| {seq} | {} | {:.1} | {:.2} % | {} | {:.1} % | {} | {} | {} | {} | {} |\n",
                r.mode,
                r.fps,
                100.0 * r.accuracy,
                r.agreement
                    .map(|x| format!("{:.2} %", 100.0 * x))
                    .unwrap_or_else(|| "–".into()),
                100.0 * r.hit_rate,
                or_dash(a.sent.to_string()),
                or_dash(a.dropped.to_string()),
                or_dash(format!(
                    "{:.2} %",
                    100.0 * a.sent as f64 / r.frames.max(1) as f64
                )),
                or_dash(if a.answered > 0 {
                    format!("{:.1} %", 100.0 * a.agree as f64 / a.answered as f64)
                } else {
                    "–".into()
                }),
                or_dash(format!("{:.3}", a.final_threshold)),
            ));
        }
    }
    s
}
