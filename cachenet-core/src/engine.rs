//! ONNX inference with tract. This is the only module of the project that calls tract.
//!
//! A [`Model`] is loaded and optimised once for a fixed `1xCxHxW` input and can be shared
//! between threads (`Arc`); [`Model::run_into`] runs it into a reused output buffer.
//!
//! Each run spawns its tract state and drops it on the thread that ran it. tract keeps a
//! state's matrix-multiply scratch in the running thread's thread-locals, keyed by the state,
//! and frees it only when the state is dropped on that same thread. A state kept across runs
//! on a GStreamer streaming thread and dropped at `stop()` on the application thread left its
//! scratch behind in the streaming thread, which GLib's thread pool keeps for the next
//! NULL -> PLAYING cycle: about 2 kB more RSS per cycle. Spawning costs about 1 % of a run
//! (shipped submodel, release build: median 1,479 us against 1,466 us with a kept state; the
//! spawned state takes over the thread's spare scratch).

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

use crate::{CoreError, Result};

/// Where the time of loading a model went (microseconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadTimings {
    /// ONNX protobuf parse, analysis and typing.
    pub parse_us: u64,
    /// Decluttering, optimisation and the runnable plan.
    pub optimise_us: u64,
}

/// An optimised ONNX model with a fixed input shape and a flat f32 output.
#[derive(Clone)]
pub struct Model {
    name: String,
    plan: Arc<TypedRunnableModel>,
    input_shape: [usize; 4],
    output_len: usize,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("name", &self.name)
            .field("input_shape", &self.input_shape)
            .field("output_len", &self.output_len)
            .finish()
    }
}

fn model_err(name: &str, e: impl std::fmt::Display) -> CoreError {
    CoreError::Model {
        name: name.to_string(),
        message: format!("{e:#}"),
    }
}

impl Model {
    /// Load an ONNX model from bytes. `name` is used in errors (a file name). The model's
    /// declared input must agree with `input_shape` (a symbolic batch is accepted) and its
    /// output must hold `output_len` values.
    pub fn from_bytes(
        name: &str,
        bytes: &[u8],
        input_shape: [usize; 4],
        output_len: usize,
    ) -> Result<Model> {
        Self::from_bytes_timed(name, bytes, input_shape, output_len).map(|(m, _)| m)
    }

    /// [`Model::from_bytes`], with the time spent parsing and optimising.
    pub fn from_bytes_timed(
        name: &str,
        bytes: &[u8],
        input_shape: [usize; 4],
        output_len: usize,
    ) -> Result<(Model, LoadTimings)> {
        let t0 = std::time::Instant::now();
        let onnx = tract_onnx::onnx();
        let model = onnx
            .model_for_read(&mut std::io::Cursor::new(bytes))
            .map_err(|e| model_err(name, e))?;
        if model.inputs.len() != 1 {
            return Err(CoreError::Shape {
                name: name.into(),
                message: format!("expected one input, the model has {}", model.inputs.len()),
            });
        }
        let declared = &model.input_fact(0).map_err(|e| model_err(name, e))?.shape;
        let dims: Vec<Option<i64>> = declared
            .dims()
            .map(|d| d.concretize().and_then(|d| d.to_i64().ok()))
            .collect();
        if !declared.is_open() || !dims.is_empty() {
            let agrees = dims.len() == 4
                && dims
                    .iter()
                    .zip(input_shape)
                    .enumerate()
                    .all(|(i, (d, want))| match d {
                        Some(d) => *d == want as i64,
                        None => i == 0, // symbolic batch only
                    });
            if !agrees {
                let shown: Vec<String> = dims
                    .iter()
                    .map(|d| d.map(|d| d.to_string()).unwrap_or_else(|| "?".into()))
                    .collect();
                return Err(CoreError::Shape {
                    name: name.into(),
                    message: format!(
                        "ONNX input shape [{}] disagrees with the manifest input {:?}",
                        shown.join(", "),
                        input_shape
                    ),
                });
            }
        }
        let typed = model
            .with_input_fact(0, f32::fact(input_shape).into())
            .and_then(|m| m.into_typed())
            .map_err(|e| model_err(name, e))?;
        let parse_us = t0.elapsed().as_micros() as u64;
        let t1 = std::time::Instant::now();
        let plan = typed
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(|e| model_err(name, e))?;
        let out_shape = plan
            .model()
            .output_fact(0)
            .map_err(|e| model_err(name, e))?
            .shape
            .as_concrete()
            .map(|s| s.iter().product::<usize>());
        if out_shape != Some(output_len) {
            return Err(CoreError::Shape {
                name: name.into(),
                message: format!(
                    "output has {} values, expected {output_len}",
                    out_shape
                        .map(|n| n.to_string())
                        .unwrap_or_else(|| "a symbolic number of".into())
                ),
            });
        }
        let optimise_us = t1.elapsed().as_micros() as u64;
        Ok((
            Model {
                name: name.to_string(),
                plan,
                input_shape,
                output_len,
            },
            LoadTimings {
                parse_us,
                optimise_us,
            },
        ))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn input_len(&self) -> usize {
        self.input_shape.iter().product()
    }

    pub fn output_len(&self) -> usize {
        self.output_len
    }

    fn tensor(&self, input: &[f32]) -> Result<Tensor> {
        if input.len() != self.input_len() {
            return Err(CoreError::Input(format!(
                "{}: input has {} values, expected {}",
                self.name,
                input.len(),
                self.input_len()
            )));
        }
        Tensor::from_shape(&self.input_shape, input).map_err(|e| self.infer_err(e))
    }

    fn infer_err(&self, e: impl std::fmt::Display) -> CoreError {
        CoreError::Inference {
            name: self.name.clone(),
            message: format!("{e:#}"),
        }
    }

    fn read_output(&self, outputs: &TVec<TValue>, out: &mut Vec<f32>) -> Result<()> {
        let first = outputs.first().ok_or_else(|| self.infer_err("no output"))?;
        let view = first.try_as_plain_ram().map_err(|e| self.infer_err(e))?;
        let slice = view.as_slice::<f32>().map_err(|e| self.infer_err(e))?;
        out.clear();
        out.extend_from_slice(slice);
        Ok(())
    }

    /// Run on `input` and write the flat output into `out` (reused: no allocation for it).
    /// Thread-safe: each run spawns its tract state on the calling thread (see the module's
    /// documentation).
    pub fn run_into(&self, input: &[f32], out: &mut Vec<f32>) -> Result<()> {
        let t = self.tensor(input)?;
        let outputs = self
            .plan
            .run(tvec!(t.into()))
            .map_err(|e| self.infer_err(e))?;
        self.read_output(&outputs, out)
    }

    /// Run once into a new vector.
    pub fn run(&self, input: &[f32]) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(self.output_len);
        self.run_into(input, &mut out)?;
        Ok(out)
    }
}
