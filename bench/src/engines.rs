//! The inference engine against onnxruntime: each classifier of a model set timed as the element
//! runs it (the engine's own plan where the graph allows it; one thread, a reused output
//! buffer), on tract's plan, and with onnxruntime (one thread, through python3) on the same
//! file.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use cachenet_core::engine::{Backend, Model};
use cachenet_core::manifest::{Manifest, read_verified};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EngineRow {
    pub file: String,
    /// The plan the element runs this model on ("direct" or "tract").
    pub plan: String,
    /// Median ms per run as the element runs it.
    pub engine_ms: f64,
    /// Median ms per run on tract's plan.
    pub tract_ms: f64,
    pub onnxruntime_ms: Option<f64>,
    /// engine / onnxruntime.
    pub ratio: Option<f64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    v[v.len() / 2]
}

const ORT: &str = r#"
import sys, time
import numpy as np
import onnxruntime as ort
runs = int(sys.argv[1])
o = ort.SessionOptions()
o.intra_op_num_threads = 1
o.inter_op_num_threads = 1
for f in sys.argv[2:]:
    s = ort.InferenceSession(f, o, providers=["CPUExecutionProvider"])
    i = s.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in i.shape]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for _ in range(10):
        s.run(None, {i.name: x})
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        s.run(None, {i.name: x})
        ts.append(time.perf_counter() - t)
    print(f, float(np.median(ts)) * 1000)
"#;

/// Rounds of alternating measurements (engine, tract's plan, onnxruntime): a shared machine's
/// load drifts, and each engine sees the same drift.
const ROUNDS: usize = 5;

/// Time the full model and every submodel of `dir`: [`ROUNDS`] rounds of `runs` runs on the
/// element's plan, on tract's plan, then on onnxruntime; each figure is the median over the
/// rounds of the per-round medians.
pub fn compare(dir: &Path, runs: usize) -> Result<Vec<EngineRow>, String> {
    let m = Manifest::load(dir).map_err(|e| e.to_string())?;
    let mut files = vec![m.full_model.clone()];
    files.extend(m.submodels.iter().map(|s| s.model_file()));
    let mut models = Vec::new();
    for f in &files {
        let bytes = read_verified(dir, f).map_err(|e| e.to_string())?;
        let load = |backend| {
            Model::from_bytes_on(&f.file, &bytes, m.input.shape(), m.labels.len(), backend)
                .map(|(m, _)| m)
                .map_err(|e| e.to_string())
        };
        let (model, tract) = (load(Backend::Direct)?, load(Backend::Tract)?);
        let input: Vec<f32> = (0..model.input_len())
            .map(|i| ((i * 7919) % 255) as f32 / 128.0 - 1.0)
            .collect();
        models.push(([model, tract], input));
    }
    let mut engine: Vec<Vec<f64>> = vec![Vec::new(); files.len()];
    let mut tract: Vec<Vec<f64>> = vec![Vec::new(); files.len()];
    let mut onnx: Vec<Vec<f64>> = vec![Vec::new(); files.len()];
    let mut ort_ok = true;
    for _ in 0..ROUNDS {
        for (k, (pair, input)) in models.iter().enumerate() {
            for (model, times) in pair.iter().zip([&mut engine[k], &mut tract[k]]) {
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
        }
        if !ort_ok {
            continue;
        }
        let out = Command::new("python3")
            .args(["-c", ORT, &runs.to_string()])
            .args(files.iter().map(|f| dir.join(&f.file)))
            .output();
        match out {
            Ok(o) if o.status.success() => {
                for line in String::from_utf8_lossy(&o.stdout).lines() {
                    let Some((path, ms)) = line.rsplit_once(' ') else {
                        continue;
                    };
                    let Ok(ms) = ms.parse::<f64>() else { continue };
                    if let Some(k) = files.iter().position(|f| path.ends_with(&f.file)) {
                        onnx[k].push(ms);
                    }
                }
            }
            _ => {
                eprintln!("warning: onnxruntime timing skipped (python3 with onnxruntime needed)");
                ort_ok = false;
            }
        }
    }
    Ok(files
        .iter()
        .zip(models.iter().zip(engine.into_iter().zip(tract).zip(onnx)))
        .map(|(f, ((pair, _), ((e, t), o)))| {
            let engine_ms = median(e);
            let onnxruntime_ms = (!o.is_empty()).then(|| median(o));
            EngineRow {
                file: f.file.clone(),
                plan: match pair[0].backend() {
                    Backend::Direct => "direct".into(),
                    Backend::Tract => "tract".into(),
                },
                engine_ms,
                tract_ms: median(t),
                onnxruntime_ms,
                ratio: onnxruntime_ms.map(|ms| engine_ms / ms),
            }
        })
        .collect())
}

pub fn markdown(rows: &[EngineRow]) -> String {
    let mut s = String::from(
        "| model | plan | engine as the element runs it (ms, 1 thread) | tract's plan (ms) | onnxruntime (ms, 1 thread) | engine / onnxruntime |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {:.3} | {:.3} | {} | {} |\n",
            r.file,
            r.plan,
            r.engine_ms,
            r.tract_ms,
            r.onnxruntime_ms
                .map(|v| format!("{v:.3}"))
                .unwrap_or_else(|| "–".into()),
            r.ratio
                .map(|v| format!("{v:.2} x"))
                .unwrap_or_else(|| "–".into())
        ));
    }
    s
}
