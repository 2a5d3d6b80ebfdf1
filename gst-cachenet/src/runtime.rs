//! The device side of CacheNet, independent of GStreamer: the LRU cache of submodels, the
//! hit/miss decision (hit iff H < T), offloading to the edge (sync or on a worker thread), the
//! submodel swap, back-off while the edge is down, and the counters.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::time::{Duration, Instant};

use cachenet_core::cache::SubmodelCache;
use cachenet_core::engine::{Model, Session};
use cachenet_core::manifest::Manifest;
use cachenet_core::maths::Classification;
use cachenet_core::modelset::load_classifier;
use cachenet_core::preprocess::normalize_into;
use cachenet_core::proto;

use crate::edge::{EdgeClient, Traffic};
use crate::store::Store;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Cached submodel, offload on a miss.
    CacheNet,
    /// The full model on every frame, locally.
    Device,
    /// Every frame offloaded.
    Edge,
    /// The active cached submodel on every frame, never offloaded (the speed limit of CacheNet
    /// at a 100 % hit rate).
    SubmodelOnly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offload {
    Sync,
    Async,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Device,
    Edge,
    None,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Device => "device",
            Source::Edge => "edge",
            Source::None => "none",
        }
    }
}

/// The result attached to one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameResult {
    /// -1 when nothing classified the frame.
    pub class_id: i32,
    pub label: String,
    pub confidence: f32,
    /// Entropy (nats) of the model that gave the answer.
    pub entropy: f32,
    pub source: Source,
    pub hit: bool,
    /// The submodel that answered or, on a miss, the active one after the miss; -1 if none.
    pub submodel: i32,
    /// The edge was needed but could not answer: the local result stands in.
    pub degraded: bool,
}

/// Counters exposed by the `stats` property.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub frames: u64,
    pub hits: u64,
    pub misses: u64,
    pub offloads: u64,
    pub offload_failures: u64,
    pub swaps: u64,
    pub evictions: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub device_time_us: u64,
    pub edge_time_us: u64,
    /// -1 when no submodel is cached.
    pub active_submodel: i32,
}

impl Stats {
    pub fn hit_rate(&self) -> f64 {
        if self.frames == 0 {
            0.0
        } else {
            self.hits as f64 / self.frames as f64
        }
    }
}

/// Settings of a runtime (the element's properties, resolved).
#[derive(Debug, Clone)]
pub struct Config {
    pub mode: Mode,
    pub offload: Offload,
    pub threshold: f32,
    pub cache_size: usize,
}

/// What an offload brings back.
struct Outcome {
    response: proto::InferResponse,
    /// The selected submodel, loaded, when it was not cached.
    loaded: Option<(u32, Model)>,
    traffic: Traffic,
    took: Duration,
}

/// Exponential back-off after edge failures: 250 ms doubling to 10 s, reset on success.
#[derive(Debug, Default)]
struct Backoff {
    until: Option<Instant>,
    delay: Duration,
}

impl Backoff {
    fn blocked(&self) -> bool {
        self.until.is_some_and(|t| Instant::now() < t)
    }
    fn fail(&mut self) {
        self.delay = (self.delay * 2).clamp(Duration::from_millis(250), Duration::from_secs(10));
        self.until = Some(Instant::now() + self.delay);
    }
    fn ok(&mut self) {
        self.delay = Duration::ZERO;
        self.until = None;
    }
}

/// Everything an offload needs, shareable with the worker thread.
#[derive(Clone)]
struct Offloader {
    edge: EdgeClient,
    store: Option<Store>,
    manifest: Arc<Manifest>,
}

impl Offloader {
    fn run(&self, hwc: Vec<u8>, cached: Vec<u32>, request_id: String) -> Result<Outcome, String> {
        let t = Instant::now();
        let spec = &self.manifest.input;
        let req = proto::InferRequest {
            api_version: proto::API_VERSION,
            request_id,
            image: Some(proto::infer_request::Image::Raw(proto::RawFrame {
                pixels: hwc,
                width: spec.width as u32,
                height: spec.height as u32,
                channels: spec.channels as u32,
            })),
            cached_submodels: cached.clone(),
        };
        let (response, mut traffic) = self.edge.infer(&req)?;
        if response.class_id as usize >= self.manifest.labels.len() {
            return Err(format!(
                "edge answered class {} out of range",
                response.class_id
            ));
        }
        let id = response.submodel_id;
        let spec = self
            .manifest
            .submodel(id)
            .ok_or_else(|| format!("edge selected unknown submodel {id}"))?;
        if !spec.sha256.eq_ignore_ascii_case(&response.submodel_sha256) {
            return Err(format!(
                "edge selected submodel {id} with sha256 {}, the manifest says {}",
                response.submodel_sha256, spec.sha256
            ));
        }
        let loaded = if cached.contains(&id) {
            None
        } else {
            let bytes = match self.store.as_ref().and_then(|s| s.load(&spec.sha256)) {
                Some(b) => b,
                None => {
                    let (b, tr) = self.edge.submodel(id, &spec.sha256)?;
                    traffic.down += tr.down;
                    if let Some(s) = &self.store {
                        s.save(&spec.sha256, &b)?;
                    }
                    b
                }
            };
            let model = load_classifier(&self.manifest, &spec.file, &bytes)
                .map_err(|e| format!("submodel {id} rejected: {e}"))?;
            Some((id, model))
        };
        Ok(Outcome {
            response,
            loaded,
            traffic,
            took: t.elapsed(),
        })
    }
}

type Job = (Vec<u8>, Vec<u32>, String);

/// The async offload worker: at most one request in flight.
struct Worker {
    jobs: SyncSender<Job>,
    results: Receiver<Result<Outcome, String>>,
    in_flight: bool,
}

impl Worker {
    fn spawn(off: Offloader) -> Worker {
        let (jobs, job_rx) = std::sync::mpsc::sync_channel::<Job>(1);
        let (res_tx, results) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("cachenet-offload".into())
            .spawn(move || {
                for (hwc, cached, id) in job_rx {
                    if res_tx.send(off.run(hwc, cached, id)).is_err() {
                        break;
                    }
                }
            })
            .expect("spawn the offload thread");
        Worker {
            jobs,
            results,
            in_flight: false,
        }
    }
}

/// The per-element CacheNet runtime.
pub struct Runtime {
    manifest: Arc<Manifest>,
    config: Config,
    full: Option<Session>,
    cache: SubmodelCache<Session>,
    active: Option<u32>,
    offloader: Option<Offloader>,
    worker: Option<Worker>,
    backoff: Backoff,
    stats: Stats,
    tensor: Vec<f32>,
    logits: Vec<f32>,
    request_seq: u64,
    warnings: Vec<String>,
    recovered: bool,
}

impl Runtime {
    /// `full`: the full model (needed in device mode). `initial`: submodels to start with,
    /// most recently used first (the first becomes active).
    pub fn new(
        manifest: Manifest,
        config: Config,
        full: Option<Model>,
        initial: Vec<(u32, Model)>,
        edge: Option<EdgeClient>,
        store: Option<Store>,
    ) -> Result<Runtime, String> {
        let manifest = Arc::new(manifest);
        if config.mode == Mode::Device && full.is_none() {
            return Err("mode=device needs the full model: set model-dir".into());
        }
        if config.mode == Mode::Edge && edge.is_none() {
            return Err("mode=edge needs edge-url".into());
        }
        if config.mode == Mode::SubmodelOnly && initial.is_empty() {
            return Err(
                "mode=submodel-only needs a submodel: set model-dir (or a filled cache-dir)".into(),
            );
        }
        let mut cache = SubmodelCache::new(config.cache_size);
        let mut active = None;
        for (id, model) in initial.into_iter().take(config.cache_size).rev() {
            let session = model.session().map_err(|e| e.to_string())?;
            cache.insert(id, session);
            active = Some(id);
        }
        let full = match full {
            Some(m) => Some(m.session().map_err(|e| e.to_string())?),
            None => None,
        };
        let offloader = edge.map(|edge| Offloader {
            edge,
            store,
            manifest: manifest.clone(),
        });
        let worker = match (&offloader, config.offload, config.mode) {
            (Some(o), Offload::Async, Mode::CacheNet) => Some(Worker::spawn(o.clone())),
            _ => None,
        };
        let n = manifest.input.len();
        Ok(Runtime {
            stats: Stats::default(),
            manifest,
            config,
            full,
            cache,
            active,
            offloader,
            worker,
            backoff: Backoff::default(),
            tensor: vec![0.0; n],
            logits: Vec::new(),
            request_seq: 0,
            warnings: Vec::new(),
            recovered: false,
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The counters, with the active submodel filled in.
    pub fn stats(&self) -> Stats {
        Stats {
            active_submodel: self.active.map_or(-1, |a| a as i32),
            ..self.stats.clone()
        }
    }

    /// Cached submodel ids, most recently used first.
    pub fn cached(&self) -> Vec<u32> {
        self.cache.ids_mru()
    }

    pub fn active(&self) -> Option<u32> {
        self.active
    }

    /// Warnings since the last call (edge failures), to post on the bus.
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    /// True once after the edge answers again following failures.
    pub fn take_recovered(&mut self) -> bool {
        std::mem::take(&mut self.recovered)
    }

    /// Whether an async offload is in flight.
    pub fn offload_in_flight(&self) -> bool {
        self.worker.as_ref().is_some_and(|w| w.in_flight)
    }

    fn result(
        &self,
        c: &Classification,
        source: Source,
        hit: bool,
        submodel: Option<u32>,
    ) -> FrameResult {
        FrameResult {
            class_id: c.class_id as i32,
            label: self
                .manifest
                .labels
                .get(c.class_id)
                .cloned()
                .unwrap_or_default(),
            confidence: c.confidence,
            entropy: c.entropy,
            source,
            hit,
            submodel: submodel.map_or(-1, |s| s as i32),
            degraded: false,
        }
    }

    fn none_result(&self) -> FrameResult {
        FrameResult {
            class_id: -1,
            label: String::new(),
            confidence: 0.0,
            entropy: f32::NAN,
            source: Source::None,
            hit: false,
            submodel: -1,
            degraded: true,
        }
    }

    fn run_cached(&mut self, id: u32) -> Option<Classification> {
        let t = Instant::now();
        let session = self.cache.get_mut(id)?;
        let r = session.run_into(&self.tensor, &mut self.logits);
        self.stats.device_time_us += t.elapsed().as_micros() as u64;
        match r {
            Ok(()) => Some(Classification::from_logits(&self.logits)),
            Err(e) => {
                self.warnings.push(format!("submodel {id}: {e}"));
                None
            }
        }
    }

    fn set_active(&mut self, id: u32) {
        if self.active != Some(id) {
            self.active = Some(id);
            self.stats.swaps += 1;
        }
    }

    fn insert(&mut self, id: u32, model: Model) -> Result<(), String> {
        let session = model.session().map_err(|e| e.to_string())?;
        if self.cache.insert(id, session).is_some() {
            self.stats.evictions += 1;
        }
        if let Some(store) = self.offloader.as_ref().and_then(|o| o.store.as_ref())
            && let Some(s) = self.manifest.submodel(id)
        {
            store.touch(&s.sha256);
        }
        Ok(())
    }

    fn apply(&mut self, outcome: Outcome) -> Result<FrameResult, String> {
        self.stats.bytes_up += outcome.traffic.up;
        self.stats.bytes_down += outcome.traffic.down;
        self.stats.edge_time_us += outcome.took.as_micros() as u64;
        let r = &outcome.response;
        let id = r.submodel_id;
        if let Some((lid, model)) = outcome.loaded {
            self.insert(lid, model)?;
        } else if !self.cache.contains(id) {
            return Err(format!("submodel {id} was evicted before it could be used"));
        } else {
            self.cache.get_mut(id);
        }
        self.set_active(id);
        let c = Classification::from_probabilities(r.probabilities.clone());
        let mut res = self.result(&c, Source::Edge, false, Some(id));
        res.class_id = r.class_id as i32;
        res.label = r.label.clone();
        res.entropy = r.entropy;
        Ok(res)
    }

    fn edge_failed(&mut self, e: String) {
        self.stats.offload_failures += 1;
        let first = !self.backoff.blocked() && self.backoff.delay.is_zero();
        self.backoff.fail();
        if first {
            self.warnings
                .push(format!("edge offload failed (retrying with back-off): {e}"));
        }
    }

    fn edge_ok(&mut self) {
        if !self.backoff.delay.is_zero() {
            self.recovered = true;
        }
        self.backoff.ok();
    }

    fn next_request_id(&mut self) -> String {
        self.request_seq += 1;
        format!("{}", self.request_seq)
    }

    fn degraded(local: Option<FrameResult>, fallback: FrameResult) -> FrameResult {
        let mut r = local.unwrap_or(fallback);
        r.degraded = true;
        r
    }

    /// Apply a finished async offload (at a frame boundary).
    fn poll_worker(&mut self) {
        let polled = match self.worker.as_mut() {
            Some(w) if w.in_flight => match w.results.try_recv() {
                Ok(r) => {
                    w.in_flight = false;
                    Some(r)
                }
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => {
                    w.in_flight = false;
                    Some(Err("offload thread stopped".into()))
                }
            },
            _ => None,
        };
        match polled {
            Some(Ok(outcome)) => match self.apply(outcome) {
                Ok(_) => self.edge_ok(),
                Err(e) => self.edge_failed(e),
            },
            Some(Err(e)) => self.edge_failed(e),
            None => {}
        }
    }

    /// Classify one frame given as HWC u8 pixels at the model's input size.
    pub fn process(&mut self, hwc: &[u8]) -> FrameResult {
        self.stats.frames += 1;
        normalize_into(hwc, &self.manifest.input, &mut self.tensor);
        match self.config.mode {
            Mode::Device => {
                let t = Instant::now();
                let full = self.full.as_mut().expect("checked in new()");
                let r = full.run_into(&self.tensor, &mut self.logits);
                self.stats.device_time_us += t.elapsed().as_micros() as u64;
                match r {
                    Ok(()) => {
                        let c = Classification::from_logits(&self.logits);
                        self.result(&c, Source::Device, false, None)
                    }
                    Err(e) => {
                        self.warnings.push(format!("full model: {e}"));
                        self.none_result()
                    }
                }
            }
            Mode::Edge => {
                self.stats.misses += 1;
                self.offload_sync(hwc, None)
            }
            Mode::CacheNet => self.process_cachenet(hwc),
            Mode::SubmodelOnly => {
                let active = self.active.expect("checked in new()");
                match self.run_cached(active) {
                    Some(c) => {
                        let hit = c.is_hit(self.config.threshold);
                        self.stats.hits += u64::from(hit);
                        self.stats.misses += u64::from(!hit);
                        self.result(&c, Source::Device, hit, Some(active))
                    }
                    None => self.none_result(),
                }
            }
        }
    }

    fn process_cachenet(&mut self, hwc: &[u8]) -> FrameResult {
        self.poll_worker();
        let threshold = self.config.threshold;
        let mut local: Option<FrameResult> = None;
        if let Some(a) = self.active
            && let Some(c) = self.run_cached(a)
        {
            if c.is_hit(threshold) {
                self.stats.hits += 1;
                return self.result(&c, Source::Device, true, Some(a));
            }
            local = Some(self.result(&c, Source::Device, false, Some(a)));
        }
        for id in self.cache.ids_mru() {
            if Some(id) == self.active {
                continue;
            }
            if let Some(c) = self.run_cached(id) {
                if c.is_hit(threshold) {
                    self.stats.hits += 1;
                    self.set_active(id);
                    return self.result(&c, Source::Device, true, Some(id));
                }
                if local.is_none() {
                    local = Some(self.result(&c, Source::Device, false, Some(id)));
                }
            }
        }
        self.stats.misses += 1;
        if self.offloader.is_none() {
            return local.unwrap_or_else(|| self.none_result());
        }
        match self.config.offload {
            Offload::Sync => self.offload_sync(hwc, local),
            Offload::Async => {
                if self.backoff.blocked() {
                    return Self::degraded(local, self.none_result());
                }
                if !self.offload_in_flight() {
                    let cached = self.cache.ids_mru();
                    let rid = self.next_request_id();
                    let w = self.worker.as_mut().expect("async worker");
                    if w.jobs.try_send((hwc.to_vec(), cached, rid)).is_ok() {
                        w.in_flight = true;
                        self.stats.offloads += 1;
                    }
                }
                local.unwrap_or_else(|| {
                    let mut r = self.none_result();
                    r.degraded = false;
                    r
                })
            }
        }
    }

    fn offload_sync(&mut self, hwc: &[u8], local: Option<FrameResult>) -> FrameResult {
        if self.backoff.blocked() {
            return Self::degraded(local, self.none_result());
        }
        let Some(off) = self.offloader.clone() else {
            return Self::degraded(local, self.none_result());
        };
        self.stats.offloads += 1;
        let rid = self.next_request_id();
        let cached = if self.config.mode == Mode::Edge {
            // The Edge baseline only wants the label: pretend every submodel is cached so that
            // nothing is downloaded.
            self.manifest.submodels.iter().map(|s| s.id).collect()
        } else {
            self.cache.ids_mru()
        };
        let outcome = off.run(hwc.to_vec(), cached, rid);
        match outcome {
            Ok(o) if self.config.mode == Mode::Edge => {
                self.stats.bytes_up += o.traffic.up;
                self.stats.bytes_down += o.traffic.down;
                self.stats.edge_time_us += o.took.as_micros() as u64;
                self.edge_ok();
                let r = &o.response;
                FrameResult {
                    class_id: r.class_id as i32,
                    label: r.label.clone(),
                    confidence: r
                        .probabilities
                        .get(r.class_id as usize)
                        .copied()
                        .unwrap_or(0.0),
                    entropy: r.entropy,
                    source: Source::Edge,
                    hit: false,
                    submodel: -1,
                    degraded: false,
                }
            }
            Ok(o) => match self.apply(o) {
                Ok(r) => {
                    self.edge_ok();
                    r
                }
                Err(e) => {
                    self.edge_failed(e);
                    Self::degraded(local, self.none_result())
                }
            },
            Err(e) => {
                self.edge_failed(e);
                Self::degraded(local, self.none_result())
            }
        }
    }
}
