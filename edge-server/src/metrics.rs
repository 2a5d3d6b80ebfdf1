//! Prometheus text metrics: requests by route and status, inference latency, submodel
//! selections, audits of devices' hits by submodel, bytes in and out, uploads and inferences
//! in progress.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    selected: Mutex<BTreeMap<(String, u32), u64>>,
    audits: Mutex<BTreeMap<(String, u32), u64>>,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl Metrics {
    pub fn request(&self, route: &str, status: u16, bytes_in: u64, bytes_out: u64) {
        *self
            .requests
            .lock()
            .unwrap()
            .entry((route.to_string(), status))
            .or_default() += 1;
        self.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
    }

    pub fn inference(&self, set: &str, took: Duration, submodel: u32) {
        let s = took.as_secs_f64();
        {
            let mut l = self.latency.lock().unwrap();
            let h = l.entry(set.to_string()).or_default();
            for (i, b) in BUCKETS.iter().enumerate() {
                if s <= *b {
                    h.counts[i] += 1;
                }
            }
            h.sum += s;
            h.count += 1;
        }
        *self
            .selected
            .lock()
            .unwrap()
            .entry((set.to_string(), submodel))
            .or_default() += 1;
    }

    /// An infer request that audits a device's hit of `submodel` (also counted as an inference).
    pub fn audit(&self, set: &str, submodel: u32) {
        *self
            .audits
            .lock()
            .unwrap()
            .entry((set.to_string(), submodel))
            .or_default() += 1;
    }

    /// The Prometheus text exposition, with the given gauges (name, help, value) first.
    pub fn render(&self, gauges: &[(&str, &str, usize)]) -> String {
        let mut o = String::new();
        for (name, help, v) in gauges {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        o.push_str("# HELP cachenet_requests_total HTTP requests by route and status.\n");
        o.push_str("# TYPE cachenet_requests_total counter\n");
        for ((route, status), n) in self.requests.lock().unwrap().iter() {
            let _ = writeln!(
                o,
                "cachenet_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        o.push_str("# HELP cachenet_inference_seconds Full model + selector time per frame.\n");
        o.push_str("# TYPE cachenet_inference_seconds histogram\n");
        for (set, h) in self.latency.lock().unwrap().iter() {
            for (b, c) in BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(
                    o,
                    "cachenet_inference_seconds_bucket{{set=\"{set}\",le=\"{b}\"}} {c}"
                );
            }
            let _ = writeln!(
                o,
                "cachenet_inference_seconds_bucket{{set=\"{set}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                o,
                "cachenet_inference_seconds_sum{{set=\"{set}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                o,
                "cachenet_inference_seconds_count{{set=\"{set}\"}} {}",
                h.count
            );
        }
        o.push_str("# HELP cachenet_submodel_selected_total Times each submodel was selected.\n");
        o.push_str("# TYPE cachenet_submodel_selected_total counter\n");
        for ((set, id), n) in self.selected.lock().unwrap().iter() {
            let _ = writeln!(
                o,
                "cachenet_submodel_selected_total{{set=\"{set}\",submodel=\"{id}\"}} {n}"
            );
        }
        o.push_str(
            "# HELP cachenet_audits_total Infer requests that audit a device's hit, by the \
             submodel that hit (included in the inference counts).\n",
        );
        o.push_str("# TYPE cachenet_audits_total counter\n");
        for ((set, id), n) in self.audits.lock().unwrap().iter() {
            let _ = writeln!(
                o,
                "cachenet_audits_total{{set=\"{set}\",submodel=\"{id}\"}} {n}"
            );
        }
        o.push_str("# HELP cachenet_bytes_in_total Request body bytes received.\n");
        o.push_str("# TYPE cachenet_bytes_in_total counter\n");
        let _ = writeln!(
            o,
            "cachenet_bytes_in_total {}",
            self.bytes_in.load(Ordering::Relaxed)
        );
        o.push_str("# HELP cachenet_bytes_out_total Response body bytes sent.\n");
        o.push_str("# TYPE cachenet_bytes_out_total counter\n");
        let _ = writeln!(
            o,
            "cachenet_bytes_out_total {}",
            self.bytes_out.load(Ordering::Relaxed)
        );
        o
    }
}
