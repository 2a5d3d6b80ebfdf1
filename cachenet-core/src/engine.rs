//! ONNX inference: the one engine interface of the project, and the only module that calls
//! tract or onnxruntime.
//!
//! A [`Model`] is loaded and optimised once for a fixed `1xCxHxW` input ([`Model::load`] with
//! an [`Engine`]: which backend, which execution provider) and can be shared between threads
//! (`Arc`); [`Model::run_into`] runs it into a reused output buffer; [`Model::plan`] says which
//! plan runs it and why ([`PlanReport`]), [`LoadTimings`] where its load time went.
//!
//! tract-onnx reads, checks and types every model, whichever backend runs it. Then:
//! - `auto` (the default): a plain convolutional classifier (every Fashion-MNIST classifier)
//!   runs on the engine's own plan ([`direct`]: im2col and a matrix-multiply kernel chosen at
//!   run time), 1.2-1.7x faster than tract's plan on those models and cheaper to build on a
//!   swap; any other graph (depthwise convolutions, for one) runs on tract's optimised plan,
//!   and the report says why the own plan refused it;
//! - `direct`: the own plan only (a graph it refuses is an error naming why);
//! - `tract`: tract's plan;
//! - `onnxruntime` (cargo feature `onnxruntime`): an onnxruntime session, the library found at
//!   run time ([`onnxruntime`]), with the CPU, CUDA or TensorRT execution provider; a provider
//!   that cannot start falls back to the CPU with a warning in the report.
//!
//! Each tract run spawns its tract state and drops it on the thread that ran it. tract keeps a
//! state's matrix-multiply scratch in the running thread's thread-locals, keyed by the state,
//! and frees it only when the state is dropped on that same thread. A state kept across runs
//! on a GStreamer streaming thread and dropped at `stop()` on the application thread left its
//! scratch behind in the streaming thread, which GLib's thread pool keeps for the next
//! NULL -> PLAYING cycle: about 2 kB more RSS per cycle. Spawning costs about 1 % of a run
//! (shipped submodel, release build: median 1,479 us against 1,466 us with a kept state; the
//! spawned state takes over the thread's spare scratch).

use std::path::PathBuf;
use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

use crate::{CoreError, Result};

mod direct;
mod gemm;
#[cfg(feature = "onnxruntime")]
pub mod onnxruntime;

use direct::DirectPlan;

/// Which plan runs a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The engine's own plan.
    Direct,
    /// tract's optimised plan.
    Tract,
    /// An onnxruntime session (feature `onnxruntime`).
    OnnxRuntime,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Direct => "direct",
            Backend::Tract => "tract",
            Backend::OnnxRuntime => "onnxruntime",
        }
    }
}

/// The backend asked for (the element's `backend` property, the edge's `--backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// The own plan where it takes the graph, else tract's.
    #[default]
    Auto,
    Direct,
    Tract,
    OnnxRuntime,
}

impl std::str::FromStr for BackendChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(BackendChoice::Auto),
            "direct" => Ok(BackendChoice::Direct),
            "tract" => Ok(BackendChoice::Tract),
            "onnxruntime" => Ok(BackendChoice::OnnxRuntime),
            _ => Err(format!(
                "unknown backend {s:?} (auto, direct, tract or onnxruntime)"
            )),
        }
    }
}

/// onnxruntime's execution provider (the element's `execution-provider`, the edge's
/// `--execution-provider`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Provider {
    #[default]
    Cpu,
    Cuda,
    TensorRt,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Cpu => "cpu",
            Provider::Cuda => "cuda",
            Provider::TensorRt => "tensorrt",
        }
    }
}

impl std::str::FromStr for Provider {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "cpu" => Ok(Provider::Cpu),
            "cuda" => Ok(Provider::Cuda),
            "tensorrt" => Ok(Provider::TensorRt),
            _ => Err(format!(
                "unknown execution provider {s:?} (cpu, cuda or tensorrt)"
            )),
        }
    }
}

/// How models are loaded: the backend, and for onnxruntime its execution provider, the folder
/// of TensorRT's engine cache and the library to load (None: `ORT_DYLIB_PATH`, else the
/// system's `libonnxruntime.so`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Engine {
    pub backend: BackendChoice,
    pub provider: Provider,
    pub trt_cache_dir: Option<PathBuf>,
    pub library: Option<PathBuf>,
    /// onnxruntime's intra-op threads (0: onnxruntime's default).
    pub threads: usize,
}

/// Which plan runs a model and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanReport {
    pub backend: Backend,
    /// Why the own plan refused the graph (`auto`: it runs on tract's).
    pub refused: Option<String>,
    /// onnxruntime: the execution provider that runs the session.
    pub provider: Option<Provider>,
    /// onnxruntime: the provider asked for could not start (the session runs on the CPU).
    pub warning: Option<String>,
    /// Where the load's time went (a TensorRT engine build is in `optimise_us`).
    pub load: LoadTimings,
}

impl std::fmt::Display for PlanReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.backend.as_str())?;
        if let Some(p) = self.provider {
            write!(f, " ({})", p.as_str())?;
        }
        if let Some(r) = &self.refused {
            write!(f, "; the own plan refused the graph: {r}")?;
        }
        if let Some(w) = &self.warning {
            write!(f, "; {w}")?;
        }
        Ok(())
    }
}

enum Plan {
    Tract(Arc<TypedRunnableModel>),
    Direct(DirectPlan),
    #[cfg(feature = "onnxruntime")]
    Ort(onnxruntime::OrtPlan),
}

/// Where the time of loading a model went (microseconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadTimings {
    /// ONNX protobuf parse, analysis and typing.
    pub parse_us: u64,
    /// Building the runnable plan (tract: decluttering and optimisation; onnxruntime: the
    /// session, with a TensorRT engine build on its first load).
    pub optimise_us: u64,
}

/// An optimised ONNX model with a fixed input shape and a flat f32 output.
#[derive(Clone)]
pub struct Model {
    name: String,
    plan: Arc<Plan>,
    report: Arc<PlanReport>,
    input_shape: [usize; 4],
    output_len: usize,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("name", &self.name)
            .field("input_shape", &self.input_shape)
            .field("output_len", &self.output_len)
            .field("plan", &self.report.to_string())
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
        Self::load(name, bytes, input_shape, output_len, &Engine::default())
    }

    /// Load on the backend (and provider) `engine` asks for, with the time spent parsing and
    /// building the plan.
    pub fn load(
        name: &str,
        bytes: &[u8],
        input_shape: [usize; 4],
        output_len: usize,
        engine: &Engine,
    ) -> Result<(Model, LoadTimings)> {
        let t0 = std::time::Instant::now();
        let onnx = tract_onnx::onnx();
        let proto = onnx
            .proto_model_for_read(&mut std::io::Cursor::new(bytes))
            .map_err(|e| model_err(name, e))?;
        let model = onnx
            .model_for_proto_model(&proto)
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
        let out_len = typed
            .output_fact(0)
            .map_err(|e| model_err(name, e))?
            .shape
            .as_concrete()
            .map(|s| s.iter().product::<usize>());
        if out_len != Some(output_len) {
            return Err(CoreError::Shape {
                name: name.into(),
                message: format!(
                    "output has {} values, expected {output_len}",
                    out_len
                        .map(|n| n.to_string())
                        .unwrap_or_else(|| "a symbolic number of".into())
                ),
            });
        }
        let parse_us = t0.elapsed().as_micros() as u64;
        let t1 = std::time::Instant::now();
        let optimise = |typed: TypedModel| {
            typed
                .into_optimized()
                .and_then(|m| m.into_runnable())
                .map_err(|e| model_err(name, e))
        };
        let mut report = PlanReport {
            backend: Backend::Tract,
            refused: None,
            provider: None,
            warning: None,
            load: LoadTimings::default(),
        };
        let plan = match engine.backend {
            // tract's typed graph is dropped before the plan is built, which moves the weights
            // out of the proto (for the full model each holds 17 MB); a graph the plan does not
            // take is read and typed again for tract.
            BackendChoice::Auto | BackendChoice::Direct => {
                drop(typed);
                let mut proto = proto;
                match DirectPlan::build(&mut proto, input_shape, output_len) {
                    Ok(p) => {
                        report.backend = Backend::Direct;
                        Plan::Direct(p)
                    }
                    Err(why) if engine.backend == BackendChoice::Direct => {
                        return Err(model_err(
                            name,
                            format!("the engine's own plan refuses this graph: {why}"),
                        ));
                    }
                    Err(why) => {
                        report.refused = Some(why);
                        Plan::Tract(optimise(
                            onnx.proto_model_for_read(&mut std::io::Cursor::new(bytes))
                                .and_then(|proto| onnx.model_for_proto_model(&proto))
                                .and_then(|m| m.with_input_fact(0, f32::fact(input_shape).into()))
                                .and_then(|m| m.into_typed())
                                .map_err(|e| model_err(name, e))?,
                        )?)
                    }
                }
            }
            BackendChoice::Tract => Plan::Tract(optimise(typed)?),
            #[cfg(feature = "onnxruntime")]
            BackendChoice::OnnxRuntime => {
                drop((typed, proto));
                let (plan, provider, warning) =
                    onnxruntime::OrtPlan::build(name, bytes, input_shape, output_len, engine)?;
                report.backend = Backend::OnnxRuntime;
                report.provider = Some(provider);
                report.warning = warning;
                Plan::Ort(plan)
            }
            #[cfg(not(feature = "onnxruntime"))]
            BackendChoice::OnnxRuntime => {
                return Err(model_err(
                    name,
                    "backend onnxruntime: this build has no onnxruntime support (cargo feature \
                     onnxruntime)",
                ));
            }
        };
        let optimise_us = t1.elapsed().as_micros() as u64;
        report.load = LoadTimings {
            parse_us,
            optimise_us,
        };
        Ok((
            Model {
                name: name.to_string(),
                plan: Arc::new(plan),
                report: Arc::new(report),
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

    /// The plan this model runs on.
    pub fn backend(&self) -> Backend {
        self.report.backend
    }

    /// Which plan runs this model, and why (a graph the own plan refused, a provider that
    /// could not start).
    pub fn plan(&self) -> &PlanReport {
        &self.report
    }

    pub fn input_len(&self) -> usize {
        self.input_shape.iter().product()
    }

    pub fn output_len(&self) -> usize {
        self.output_len
    }

    fn input_err(&self, len: usize) -> CoreError {
        CoreError::Input(format!(
            "{}: input has {len} values, expected {}",
            self.name,
            self.input_len()
        ))
    }

    fn tensor(&self, input: &[f32]) -> Result<Tensor> {
        if input.len() != self.input_len() {
            return Err(self.input_err(input.len()));
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
        match &*self.plan {
            Plan::Direct(plan) => {
                if input.len() != self.input_len() {
                    return Err(self.input_err(input.len()));
                }
                plan.run_into(input, out);
                Ok(())
            }
            Plan::Tract(plan) => {
                let t = self.tensor(input)?;
                let outputs = plan.run(tvec!(t.into())).map_err(|e| self.infer_err(e))?;
                self.read_output(&outputs, out)
            }
            #[cfg(feature = "onnxruntime")]
            Plan::Ort(plan) => {
                if input.len() != self.input_len() {
                    return Err(self.input_err(input.len()));
                }
                plan.run_into(input, self.input_shape, out)
                    .map_err(|e| self.infer_err(e))
            }
        }
    }

    /// Run once into a new vector.
    pub fn run(&self, input: &[f32]) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(self.output_len);
        self.run_into(input, &mut out)?;
        Ok(out)
    }
}
