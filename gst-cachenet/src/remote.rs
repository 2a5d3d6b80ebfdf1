//! The device's side of the edge protocol, run on the background workers: edge requests
//! (the offload worker) and submodel swaps (the swap worker: fetch from `cache-dir` or the edge,
//! verify against the manifest, store, compile). Every answer is checked against the manifest
//! before anything of it is used.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cachenet_core::engine::{Engine, Model};
use cachenet_core::manifest::Manifest;
use cachenet_core::modelset::load_submodel_timed;
use cachenet_core::proto;
use cachenet_core::sha256_hex;

use crate::edge::{EdgeClient, EdgeError, Traffic};
use crate::store::Store;
use crate::worker::{Generation, Worker};

/// An answer of the edge to one frame.
#[derive(Debug)]
pub struct InferOutcome {
    pub response: proto::InferResponse,
    pub traffic: Traffic,
    pub took: Duration,
}

/// Where the time of one swap went (device side, microseconds).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SwapTimings {
    /// Network: request to last byte (0 when `cache-dir` had it).
    pub download_us: u64,
    /// sha256 of the bytes.
    pub verify_us: u64,
    /// Writing to `cache-dir` (or reading from it).
    pub store_us: u64,
    /// ONNX parse, checks and typing.
    pub parse_us: u64,
    /// Building the runnable plan (the engine's own, or tract's optimisation).
    pub optimise_us: u64,
    /// The first run on a zero frame (allocations, caches).
    pub first_run_us: u64,
    /// The device's CPU time for verify, store, parse, optimise and first run: what the swap
    /// worker's thread ran (0 where the system does not report it). The phases above are wall
    /// clock: under a CPU quota they also hold the periods the device was throttled.
    pub cpu_us: u64,
}

impl SwapTimings {
    pub fn total_us(&self) -> u64 {
        self.download_us
            + self.verify_us
            + self.store_us
            + self.parse_us
            + self.optimise_us
            + self.first_run_us
    }
}

/// A fetched submodel: compiled, ready to become active (a prefetch that only stores the file
/// has no model).
#[derive(Debug)]
pub struct Fetched {
    pub id: u32,
    pub model: Option<Model>,
    pub timings: SwapTimings,
    pub traffic: Traffic,
    /// Why the download could not be written to cache-dir, if it could not.
    pub store_error: Option<String>,
}

/// An edge's answer checked against the manifest before anything of it is used: a class id and
/// a probability distribution over the manifest's labels, an entropy in range, and a submodel
/// the manifest lists with the manifest's sha256.
pub fn check_response(manifest: &Manifest, response: &proto::InferResponse) -> Result<(), String> {
    let classes = manifest.labels.len();
    if response.class_id as usize >= classes {
        return Err(format!(
            "edge answered class {} out of range",
            response.class_id
        ));
    }
    // A distribution over the manifest's classes (softmax output: sums to 1 up to rounding),
    // and its entropy, between 0 and ln(classes).
    let sum: f32 = response.probabilities.iter().sum();
    if response.probabilities.len() != classes
        || !response
            .probabilities
            .iter()
            .all(|p| (0.0..=1.0).contains(p))
        || (sum - 1.0).abs() > 1e-3
    {
        return Err("edge answered malformed probabilities".into());
    }
    if !(0.0..=(classes as f32).ln() + 1e-3).contains(&response.entropy) {
        return Err(format!(
            "edge answered entropy {} out of range",
            response.entropy
        ));
    }
    let id = response.submodel_id;
    let spec = manifest
        .submodel(id)
        .ok_or_else(|| format!("edge selected unknown submodel {id}"))?;
    if !spec.sha256.eq_ignore_ascii_case(&response.submodel_sha256) {
        return Err(format!(
            "edge selected submodel {id} with sha256 {:?}, the manifest says {}",
            response.submodel_sha256, spec.sha256
        ));
    }
    Ok(())
}

/// Everything the workers need.
#[derive(Clone)]
pub struct Remote {
    pub edge: EdgeClient,
    pub store: Option<Store>,
    pub manifest: Arc<Manifest>,
    /// What swapped submodels are loaded on (the element's `backend`).
    pub engine: Engine,
}

impl Remote {
    /// One edge request with the frame at the full model's input (`audited`: the submodel
    /// whose hit it audits); the answer is checked against the manifest.
    pub fn infer(
        &self,
        hwc: Vec<u8>,
        cached: Vec<u32>,
        request_id: String,
        audited: Option<u32>,
    ) -> Result<InferOutcome, EdgeError> {
        let t = Instant::now();
        let spec = self.manifest.full_input();
        let req = proto::InferRequest {
            api_version: proto::API_VERSION,
            request_id,
            image: Some(proto::infer_request::Image::Raw(proto::RawFrame {
                pixels: hwc,
                width: spec.width as u32,
                height: spec.height as u32,
                channels: spec.channels as u32,
            })),
            cached_submodels: cached,
            audited_submodel: audited,
        };
        let (response, traffic) = self.edge.infer(&req)?;
        check_response(&self.manifest, &response)?;
        Ok(InferOutcome {
            response,
            traffic,
            took: t.elapsed(),
        })
    }

    /// Fetch (cache-dir, else the edge), verify, store and compile submodel `id`, as `keep`
    /// says. Gives up between phases once `generation` has moved past `at` (the worker then
    /// drops the answer as one of an older generation).
    pub fn fetch(
        &self,
        id: u32,
        generation: &Generation,
        at: u64,
        keep: Keep,
    ) -> Result<Fetched, String> {
        let cancelled = || -> Result<(), String> {
            if generation.current() != at {
                Err("cancelled".into())
            } else {
                Ok(())
            }
        };
        let spec = self
            .manifest
            .submodel(id)
            .ok_or_else(|| format!("unknown submodel {id}"))?;
        let mut timings = SwapTimings::default();
        let mut traffic = Traffic::default();
        let mut store_error = None;
        let mut cpu_start = thread_cpu_ns();
        let t = Instant::now();
        let stored = self.store.as_ref().and_then(|s| s.load(&spec.sha256));
        let bytes = match stored {
            Some(b) => {
                timings.store_us = t.elapsed().as_micros() as u64;
                b
            }
            None => {
                let (b, tr) = self.edge.submodel(id, spec.size)?;
                traffic = tr;
                timings.download_us = t.elapsed().as_micros() as u64;
                cancelled()?;
                cpu_start = thread_cpu_ns();
                let t = Instant::now();
                let actual = sha256_hex(&b);
                timings.verify_us = t.elapsed().as_micros() as u64;
                if !actual.eq_ignore_ascii_case(&spec.sha256) {
                    return Err(format!(
                        "submodel {id} download rejected: sha256 {actual} does not match the \
                         manifest's {}",
                        spec.sha256
                    ));
                }
                // A download that cannot be kept (read-only or full cache-dir) is still used.
                if let Some(s) = self.store.as_ref().filter(|_| keep.store) {
                    let t = Instant::now();
                    store_error = s.save(&spec.sha256, &b).err();
                    timings.store_us = t.elapsed().as_micros() as u64;
                }
                b
            }
        };
        cancelled()?;
        if !keep.compile {
            return Ok(Fetched {
                id,
                model: None,
                timings,
                traffic,
                store_error,
            });
        }
        let (model, load) =
            load_submodel_timed(&self.manifest, id, &spec.file, &bytes, &self.engine)
                .map_err(|e| format!("submodel {id} rejected: {e}"))?;
        timings.parse_us = load.parse_us;
        timings.optimise_us = load.optimise_us;
        cancelled()?;
        let t = Instant::now();
        let zeros = vec![0.0f32; model.input_len()];
        model
            .run(&zeros)
            .map_err(|e| format!("submodel {id} rejected: {e}"))?;
        timings.first_run_us = t.elapsed().as_micros() as u64;
        if let (Some(a), Some(b)) = (cpu_start, thread_cpu_ns()) {
            timings.cpu_us = b.saturating_sub(a) / 1000;
        }
        Ok(Fetched {
            id,
            model: Some(model),
            timings,
            traffic,
            store_error,
        })
    }

    /// What a prefetch of submodel `id` keeps: the file, while `cache-dir` has at least twice
    /// the size of the submodels it does not hold yet free; the compiled plan, when
    /// `keep_compiled` (else a later swap would compile it again anyway).
    pub fn prefetch_keep(&self, keep_compiled: bool) -> Keep {
        let store = self.store.as_ref().is_some_and(|s| {
            let missing: u64 = self
                .manifest
                .submodels
                .iter()
                .filter(|m| !s.has(&m.sha256))
                .map(|m| m.size)
                .sum();
            s.available().is_some_and(|free| free >= 2 * missing)
        });
        Keep {
            store,
            compile: keep_compiled,
        }
    }
}

/// What a fetch keeps of a submodel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keep {
    /// Write the download to `cache-dir` (when there is one).
    pub store: bool,
    /// Compile it (parse, plan, first run).
    pub compile: bool,
}

impl Keep {
    /// A swap the edge asked for: stored and compiled.
    pub const ALL: Keep = Keep {
        store: true,
        compile: true,
    };
}

/// CPU time the calling thread has run, in nanoseconds (the thread's CPU clock).
pub fn thread_cpu_ns() -> Option<u64> {
    let t = cpu_time::ThreadTime::try_now().ok()?;
    u64::try_from(t.as_duration().as_nanos()).ok()
}

/// The offload worker's job: a frame for the edge.
pub struct InferJob {
    pub hwc: Vec<u8>,
    pub cached: Vec<u32>,
    pub request_id: String,
    /// An audit of a hit of this submodel (the audit worker's jobs).
    pub audited: Option<u32>,
}

/// Answers carry their request id, so that a late answer is never taken for a newer request's.
pub type OffloadWorker = Worker<InferJob, (String, Result<InferOutcome, EdgeError>)>;
pub type SwapWorker = Worker<u32, (u32, Result<Fetched, String>)>;
/// Fetches ahead of need; answers as the swap worker's.
pub type PrefetchWorker = SwapWorker;

pub fn offload_worker(remote: Remote, generation: Generation) -> OffloadWorker {
    infer_worker("cachenet-offload", remote, generation)
}

/// The audit worker: one audit at a time, on its own thread so that an audit never holds up a
/// miss's request.
pub fn audit_worker(remote: Remote, generation: Generation) -> OffloadWorker {
    infer_worker("cachenet-audit", remote, generation)
}

fn infer_worker(name: &'static str, remote: Remote, generation: Generation) -> OffloadWorker {
    Worker::spawn(name, generation, 1, None, move |j: InferJob, _| {
        let id = j.request_id.clone();
        (id, remote.infer(j.hwc, j.cached, j.request_id, j.audited))
    })
}

pub fn swap_worker(remote: Remote, generation: Generation) -> SwapWorker {
    let g = generation.clone();
    let busy = Some(generation.swaps_counter());
    Worker::spawn("cachenet-swap", generation, 8, busy, move |id: u32, at| {
        (id, remote.fetch(id, &g, at, Keep::ALL))
    })
}

/// The prefetch worker: one submodel at a time, on its own thread so that a swap the edge asks
/// for never waits behind it, and not counted in `swaps-pending`.
pub fn prefetch_worker(
    remote: Remote,
    generation: Generation,
    keep_compiled: bool,
) -> PrefetchWorker {
    let g = generation.clone();
    Worker::spawn(
        "cachenet-prefetch",
        generation,
        1,
        None,
        move |id: u32, at| {
            let keep = remote.prefetch_keep(keep_compiled);
            if !keep.store && !keep.compile {
                return (id, Err("nothing to keep".to_string()));
            }
            (id, remote.fetch(id, &g, at, keep))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_cpu_time_counts_this_threads_work_only() {
        let before = thread_cpu_ns().expect("the thread CPU clock");
        // Another thread's work is not this thread's.
        std::thread::spawn(|| (0..2_000_000u64).map(std::hint::black_box).sum::<u64>())
            .join()
            .unwrap();
        let idle = thread_cpu_ns().unwrap() - before;
        let sum: u64 = (0..20_000_000u64).map(std::hint::black_box).sum();
        assert!(sum > 0);
        let busy = thread_cpu_ns().unwrap() - before - idle;
        assert!(busy > idle, "busy {busy} ns, idle {idle} ns");
    }

    #[test]
    fn edge_answers_are_checked_against_the_manifest() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny");
        let m = Manifest::load(&dir).unwrap();
        let sub = &m.submodels[1];
        let n = m.labels.len();
        let good = proto::InferResponse {
            class_id: 1,
            probabilities: (0..n)
                .map(|i| if i == 1 { 0.9 } else { 0.1 / (n - 1) as f32 })
                .collect(),
            entropy: 0.3,
            submodel_id: sub.id,
            submodel_sha256: sub.sha256.to_uppercase(),
            ..Default::default()
        };
        check_response(&m, &good).unwrap();
        let bad = |f: &dyn Fn(&mut proto::InferResponse)| {
            let mut r = good.clone();
            f(&mut r);
            check_response(&m, &r).unwrap_err()
        };
        assert!(bad(&|r| r.class_id = n as u32).contains("class"));
        assert!(bad(&|r| r.probabilities.truncate(n - 1)).contains("probabilities"));
        assert!(bad(&|r| r.probabilities[0] = f32::NAN).contains("probabilities"));
        // Finite but not a distribution: negative, above 1, not summing to 1.
        assert!(bad(&|r| r.probabilities[0] = -1e30).contains("probabilities"));
        assert!(bad(&|r| r.probabilities[1] = 3.0).contains("probabilities"));
        assert!(bad(&|r| r.probabilities[1] = 0.5).contains("probabilities"));
        assert!(bad(&|r| r.entropy = f32::INFINITY).contains("entropy"));
        assert!(bad(&|r| r.entropy = (n as f32).ln() + 0.1).contains("entropy"));
        assert!(bad(&|r| r.submodel_id = 99).contains("unknown submodel"));
        assert!(bad(&|r| r.submodel_sha256 = "00".into()).contains("sha256"));
    }
}
