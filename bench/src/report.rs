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
    /// Frames per second of the element (sum of per-frame latencies).
    pub fps: f64,
    /// Frames per second of the whole pipeline run (decode and start-up included).
    pub fps_wall: f64,
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
        fps: if total_us > 0 {
            msgs.len() as f64 / (total_us as f64 / 1e6)
        } else {
            0.0
        },
        fps_wall: if usage.wall_s > 0.0 {
            msgs.len() as f64 / usage.wall_s
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
    }
}

/// The paper's Table 1 shape.
pub fn markdown(rows: &[ModeReport]) -> String {
    let mut s = String::from(
        "| mode | FPS | accuracy | agreement with full | hit rate | device CPU | peak memory | device time | edge time (network incl.) | bytes up / down | swaps |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let mode = match r.threshold {
            Some(t) => format!("{} (T = {t})", r.mode),
            None => r.mode.clone(),
        };
        s.push_str(&format!(
            "| {mode} | {:.1} | {:.2} % | {} | {:.1} % | {:.0} % | {:.0} MB | {:.2} s | {:.2} s | {} / {} | {} |\n",
            r.fps,
            100.0 * r.accuracy,
            r.agreement.map(|a| format!("{:.2} %", 100.0 * a)).unwrap_or_else(|| "–".into()),
            100.0 * r.hit_rate,
            r.cpu_percent,
            r.peak_rss_mb,
            r.device_time_s,
            r.edge_time_s,
            r.bytes_up,
            r.bytes_down,
            r.swaps
        ));
    }
    s
}
