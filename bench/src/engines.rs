//! The inference engine against onnxruntime: each classifier of a model set timed as the element
//! runs it (the engine's own plan where the graph allows it; one thread, a reused output
//! buffer), on tract's plan, and with onnxruntime (one thread, through python3) on the same
//! file.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use cachenet_core::engine::{BackendChoice, Engine, Model};
use cachenet_core::manifest::{Manifest, read_verified};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EngineRow {
    pub file: String,
    /// The plan the element runs this model on: "direct", or "tract; the own plan refused the
    /// graph: <why>".
    pub plan: String,
    /// Median ms per run as the element runs it (best round).
    pub engine_ms: f64,
    /// Median ms per run on tract's plan (best round).
    pub tract_ms: f64,
    /// Median ms per run on onnxruntime (best round).
    pub onnxruntime_ms: Option<f64>,
    /// engine / onnxruntime.
    pub ratio: Option<f64>,
    /// Median ms per run on the element's onnxruntime backend, in process (a build with the
    /// onnxruntime feature), and its ratio to onnxruntime's own (Python) timing.
    pub ort_backend_ms: Option<f64>,
    pub ort_backend_ratio: Option<f64>,
}

/// The fastest round: a shared host's load only ever slows a round down, and a round that it
/// slowed says nothing about the engine (the same estimator for every engine).
fn best(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    v[v.len() / 2]
}

/// onnxruntime in one python3 process for the whole comparison: it loads every file (argv), warms
/// each up, says "ready", then answers each request line "k runs" with the median ms of `runs`
/// runs of file k, so that each model's onnxruntime timing follows the engine's at once.
const ORT: &str = r#"
import sys, time
import numpy as np
import onnxruntime as ort
o = ort.SessionOptions()
o.intra_op_num_threads = 1
o.inter_op_num_threads = 1
models = []
for f in sys.argv[1:]:
    s = ort.InferenceSession(f, o, providers=["CPUExecutionProvider"])
    i = s.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in i.shape]
    feed = {i.name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    for _ in range(10):
        s.run(None, feed)
    models.append((s, feed))
print("ready", flush=True)
for line in sys.stdin:
    k, runs = map(int, line.split())
    s, feed = models[k]
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        s.run(None, feed)
        ts.append(time.perf_counter() - t)
    print(float(np.median(ts)) * 1000, flush=True)
"#;

/// The onnxruntime process of [`ORT`]; None when python3 or onnxruntime is missing.
struct Onnxruntime {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Onnxruntime {
    fn start(files: &[PathBuf]) -> Option<Onnxruntime> {
        let mut child = Command::new("python3")
            .args(["-c", ORT])
            .args(files)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let stdin = child.stdin.take()?;
        let mut stdout = BufReader::new(child.stdout.take()?);
        let mut line = String::new();
        if stdout.read_line(&mut line).is_err() || line.trim() != "ready" {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        Some(Onnxruntime {
            child,
            stdin,
            stdout,
        })
    }

    /// Median ms of `runs` runs of file `k`.
    fn time(&mut self, k: usize, runs: usize) -> Option<f64> {
        writeln!(self.stdin, "{k} {runs}").ok()?;
        let mut line = String::new();
        self.stdout.read_line(&mut line).ok()?;
        line.trim().parse().ok()
    }
}

impl Drop for Onnxruntime {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Rounds of alternating measurements (each model on the engine, tract's plan and onnxruntime,
/// one after the other): a shared machine's load drifts, and each engine sees the same drift.
const ROUNDS: usize = 5;

/// Time the full model and every submodel of `dir`: [`ROUNDS`] rounds in which each model runs
/// `runs` times on the element's plan, on tract's plan, then on onnxruntime; each figure is the
/// median of the best round.
pub fn compare(dir: &Path, runs: usize) -> Result<Vec<EngineRow>, String> {
    let m = Manifest::load(dir).map_err(|e| e.to_string())?;
    let mut files = vec![(m.full_model.model_file(), m.full_input())];
    files.extend(
        m.submodels
            .iter()
            .map(|s| (s.model_file(), m.submodel_input(s.id))),
    );
    let mut models = Vec::new();
    for (f, input) in &files {
        let bytes = read_verified(dir, f).map_err(|e| e.to_string())?;
        let load = |backend| {
            let engine = Engine {
                backend,
                threads: 1,
                ..Engine::default()
            };
            Model::load(&f.file, &bytes, input.shape(), m.labels.len(), &engine)
                .map(|(m, _)| m)
                .map_err(|e| e.to_string())
        };
        #[allow(unused_mut)]
        let mut set = vec![load(BackendChoice::Auto)?, load(BackendChoice::Tract)?];
        #[cfg(feature = "onnxruntime")]
        set.push(load(BackendChoice::OnnxRuntime)?);
        let input: Vec<f32> = (0..set[0].input_len())
            .map(|i| ((i * 7919) % 255) as f32 / 128.0 - 1.0)
            .collect();
        models.push((set, input));
    }
    let paths: Vec<PathBuf> = files.iter().map(|(f, _)| dir.join(&f.file)).collect();
    let mut ort = Onnxruntime::start(&paths);
    if ort.is_none() {
        eprintln!("warning: onnxruntime timing skipped (python3 with onnxruntime needed)");
    }
    // Per model: the times of each of its loads (the element's plan, tract's, onnxruntime's).
    let mut times: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); 3]; files.len()];
    let mut onnx: Vec<Vec<f64>> = vec![Vec::new(); files.len()];
    for _ in 0..ROUNDS {
        for (k, (set, input)) in models.iter().enumerate() {
            for (model, times) in set.iter().zip(times[k].iter_mut()) {
                let mut out = Vec::new();
                for _ in 0..10 {
                    model.run_into(input, &mut out).map_err(|e| e.to_string())?;
                }
                let mut ts = Vec::with_capacity(runs);
                for _ in 0..runs {
                    let t = Instant::now();
                    model.run_into(input, &mut out).map_err(|e| e.to_string())?;
                    ts.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                times.push(median(ts));
            }
            if let Some(o) = ort.as_mut() {
                match o.time(k, runs) {
                    Some(ms) => onnx[k].push(ms),
                    None => {
                        eprintln!("warning: the onnxruntime process stopped answering");
                        ort = None;
                    }
                }
            }
        }
    }
    let complete = onnx.iter().all(|o| o.len() == ROUNDS);
    Ok(files
        .iter()
        .zip(models.iter().zip(times.into_iter().zip(onnx)))
        .map(|(f, ((set, _), (t, o)))| {
            let engine_ms = best(&t[0]);
            let onnxruntime_ms = complete.then(|| best(&o));
            let ort_backend_ms = (!t[2].is_empty()).then(|| best(&t[2]));
            EngineRow {
                file: f.0.file.clone(),
                plan: set[0].plan().to_string(),
                engine_ms,
                tract_ms: best(&t[1]),
                onnxruntime_ms,
                ratio: onnxruntime_ms.map(|ms| engine_ms / ms),
                ort_backend_ms,
                ort_backend_ratio: ort_backend_ms.zip(onnxruntime_ms).map(|(b, p)| b / p),
            }
        })
        .collect())
}

pub fn markdown(rows: &[EngineRow]) -> String {
    let mut s = String::from(
        "| model | plan | engine as the element runs it (ms, 1 thread) | tract's plan (ms) | onnxruntime (ms, 1 thread) | engine / onnxruntime | the element's onnxruntime backend (ms, 1 thread) | backend / onnxruntime |\n|---|---|---|---|---|---|---|---|\n",
    );
    let opt = |v: Option<f64>, unit: &str| {
        v.map(|v| format!("{v:.3}{unit}"))
            .unwrap_or_else(|| "–".into())
    };
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {:.3} | {:.3} | {} | {} | {} | {} |\n",
            r.file,
            r.plan,
            r.engine_ms,
            r.tract_ms,
            r.onnxruntime_ms
                .map(|v| format!("{v:.3}"))
                .unwrap_or_else(|| "–".into()),
            r.ratio
                .map(|v| format!("{v:.2} x"))
                .unwrap_or_else(|| "–".into()),
            opt(r.ort_backend_ms, ""),
            opt(r.ort_backend_ratio, " x"),
        ));
    }
    s
}
