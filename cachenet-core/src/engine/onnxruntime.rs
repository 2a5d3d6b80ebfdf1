//! The onnxruntime backend (cargo feature `onnxruntime`), through the `ort` crate with
//! `load-dynamic`: nothing is downloaded or linked at build time; the library is opened at run
//! time, once per process, from [`Engine::library`], else `ORT_DYLIB_PATH`, else the system's
//! `libonnxruntime.so`. Any onnxruntime from 1.17 on serves (the C API level this build asks
//! for): the `onnxruntime` Python wheel's `onnxruntime/capi/libonnxruntime.so.*`,
//! `onnxruntime-gpu`'s, or a JetPack build.
//!
//! A session runs on the CPU, CUDA or TensorRT execution provider. A provider that cannot
//! start (no GPU, a library missing) is not an error: the session is built again on the CPU
//! and the report carries the reason. TensorRT builds an engine on a model's first load; with
//! `trt_cache_dir` it is kept there and the next load reads it.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;
use ort::ep;
use ort::session::Session;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::value::TensorRef;

use super::{Engine, Provider};
use crate::{CoreError, Result};

/// The process's onnxruntime environment, or why the library could not be loaded.
static ENVIRONMENT: OnceLock<std::result::Result<(Environment, PathBuf), String>> = OnceLock::new();

/// Load the library (once per process; the first caller's path wins) and make the environment.
fn environment(library: Option<&PathBuf>) -> std::result::Result<&'static Environment, String> {
    let loaded = ENVIRONMENT.get_or_init(|| {
        let path = library.cloned().unwrap_or_else(|| {
            match std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
                Some(p) => PathBuf::from(p),
                None => PathBuf::from(format!(
                    "{}onnxruntime{}",
                    std::env::consts::DLL_PREFIX,
                    std::env::consts::DLL_SUFFIX
                )),
            }
        });
        let env = ort::init_from(&path)
            .map_err(|e| {
                format!(
                    "cannot load onnxruntime from {}: {e} (install the onnxruntime wheel, \
                     onnxruntime-gpu or a JetPack build, and point ORT_DYLIB_PATH or the \
                     onnxruntime-library setting at its libonnxruntime.so)",
                    path.display()
                )
            })?
            .with_name("cachenet")
            .build()
            .map_err(|e| format!("onnxruntime environment: {e}"))?;
        Ok((env, path))
    });
    match loaded {
        Ok((env, path)) => {
            if let Some(asked) = library
                && asked != path
            {
                return Err(format!(
                    "onnxruntime is already loaded from {} in this process; {} cannot be \
                     loaded beside it",
                    path.display(),
                    asked.display()
                ));
            }
            Ok(env)
        }
        Err(e) => Err(e.clone()),
    }
}

/// The version of the onnxruntime library this process loaded (loading it if needed).
pub fn version(library: Option<&PathBuf>) -> std::result::Result<String, String> {
    environment(library)?;
    Ok(ort::info()
        .split(", ")
        .find_map(|p| p.strip_prefix("git-branch="))
        .unwrap_or("unknown")
        .to_string())
}

/// An onnxruntime session (its run takes `&mut`: one run at a time per model; the element and
/// each edge worker run their own models).
pub(super) struct OrtPlan {
    session: Mutex<Session>,
}

fn builder(env: &Environment, engine: &Engine) -> std::result::Result<SessionBuilder, String> {
    let b = Session::builder(env)
        .and_then(|b| {
            b.with_optimization_level(GraphOptimizationLevel::Level3)
                .map_err(Into::into)
        })
        .map_err(|e| e.to_string())?;
    if engine.threads > 0 {
        return b
            .with_intra_threads(engine.threads)
            .map_err(|e| e.to_string());
    }
    Ok(b)
}

fn with_provider(
    b: SessionBuilder,
    engine: &Engine,
) -> std::result::Result<SessionBuilder, String> {
    let dispatch = match engine.provider {
        Provider::Cpu => return Ok(b),
        Provider::Cuda => ep::CUDA::default().build().error_on_failure(),
        Provider::TensorRt => {
            let mut trt = ep::TensorRT::default();
            if let Some(dir) = &engine.trt_cache_dir {
                trt = trt
                    .with_engine_cache(true)
                    .with_engine_cache_path(dir.display().to_string());
            }
            trt.build().error_on_failure()
        }
    };
    b.with_execution_providers([dispatch])
        .map_err(|e| e.to_string())
}

impl OrtPlan {
    /// A session for `bytes` on `engine`'s provider (else the CPU, with the reason). Returns
    /// the plan, the provider that runs it and the warning of a fallback.
    pub(super) fn build(
        name: &str,
        bytes: &[u8],
        input_shape: [usize; 4],
        output_len: usize,
        engine: &Engine,
    ) -> Result<(OrtPlan, Provider, Option<String>)> {
        let err = |m: String| CoreError::Model {
            name: name.to_string(),
            message: m,
        };
        let env = environment(engine.library.as_ref()).map_err(err)?;
        if let Some(dir) = &engine.trt_cache_dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| err(format!("trt-cache-dir {}: {e}", dir.display())))?;
        }
        let on_provider = builder(env, engine)
            .and_then(|b| with_provider(b, engine))
            .and_then(|mut b| b.commit_from_memory(bytes).map_err(|e| e.to_string()));
        let (session, provider, warning) = match on_provider {
            Ok(s) => (s, engine.provider, None),
            Err(why) if engine.provider != Provider::Cpu => {
                let s = builder(env, engine)
                    .and_then(|mut b| b.commit_from_memory(bytes).map_err(|e| e.to_string()))
                    .map_err(err)?;
                let warning = format!(
                    "the {} execution provider could not start ({why}); running on the CPU",
                    engine.provider.as_str()
                );
                (s, Provider::Cpu, Some(warning))
            }
            Err(why) => return Err(err(why)),
        };
        let plan = OrtPlan {
            session: Mutex::new(session),
        };
        // One run checks the output size (tract checked the graph already).
        let mut out = Vec::new();
        plan.run_into(
            &vec![0.0; input_shape.iter().product()],
            input_shape,
            &mut out,
        )
        .map_err(err)?;
        if out.len() != output_len {
            return Err(CoreError::Shape {
                name: name.into(),
                message: format!("output has {} values, expected {output_len}", out.len()),
            });
        }
        Ok((plan, provider, warning))
    }

    pub(super) fn run_into(
        &self,
        input: &[f32],
        shape: [usize; 4],
        out: &mut Vec<f32>,
    ) -> std::result::Result<(), String> {
        let tensor = TensorRef::from_array_view((shape, input)).map_err(|e| e.to_string())?;
        let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let outputs = session
            .run(ort::inputs![tensor])
            .map_err(|e| e.to_string())?;
        let (_, values) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(|e| e.to_string())?;
        out.clear();
        out.extend_from_slice(values);
        Ok(())
    }
}
