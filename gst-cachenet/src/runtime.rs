//! The device side of CacheNet, independent of GStreamer: the LRU cache of submodels, the
//! hit/miss decision (hit iff H < T), offloading to the edge, the submodel swap, back-off while
//! the edge is down, and the counters.
//!
//! The streaming thread only runs models that are ready. Edge requests run on the offload
//! worker (a `sync` miss waits for the answer, bounded by `timeout-ms` and cut short by a
//! flush; an `async` miss does not wait); fetching, verifying, storing and compiling a submodel
//! run on the swap worker, and a compiled submodel becomes active at the next frame boundary.
//!
//! Each tracked object (the whole frame, or a region with `regions=roi`) keeps its own active
//! submodel, chosen from one shared LRU cache; an object not seen for `track_timeout` frames is
//! forgotten.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cachenet_core::cache::SubmodelCache;
use cachenet_core::engine::Model;
use cachenet_core::manifest::Manifest;
use cachenet_core::maths::Classification;
use cachenet_core::preprocess::normalize_into;
use gst::glib;

use crate::edge::{EdgeClient, EdgeError};
use crate::store::Store;
use crate::worker::{
    Fetched, Generation, InferJob, InferOutcome, OffloadWorker, Remote, SwapTimings, SwapWorker,
    offload_worker, swap_worker,
};

/// What runs on each frame (the element's `mode` property).
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstCacheNetMode")]
pub enum Mode {
    #[enum_value(
        name = "CacheNet: cached submodel, offload on a miss",
        nick = "cachenet"
    )]
    CacheNet = 0,
    #[enum_value(
        name = "Device: the full model on every frame, locally",
        nick = "device"
    )]
    Device = 1,
    #[enum_value(name = "Edge: every frame offloaded to the edge server", nick = "edge")]
    Edge = 2,
    #[enum_value(
        name = "Submodel only: the cached submodel on every frame, never offloaded",
        nick = "submodel-only"
    )]
    SubmodelOnly = 3,
}

/// Whether a missed frame waits for the edge (the element's `offload` property).
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstCacheNetOffload")]
pub enum Offload {
    #[enum_value(
        name = "Sync: the frame waits for the edge (bounded by timeout-ms)",
        nick = "sync"
    )]
    Sync = 0,
    #[enum_value(
        name = "Async: the frame leaves with the local result, the edge answers later",
        nick = "async"
    )]
    Async = 1,
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
    /// A miss that was not offloaded because the frame's offload budget (`max-offloads`) was
    /// spent on other objects: the local result stands in.
    pub deferred: bool,
    /// The object's last result again, without a model run (`interval`, or a late frame).
    pub reused: bool,
    /// Class probabilities of the model that answered (empty when nothing did).
    pub probabilities: Vec<f32>,
}

/// The key of a tracked object. The whole frame is [`FRAME_OBJECT`].
pub type ObjectKey = u64;
/// The object that is the whole frame (`regions=frame`).
pub const FRAME_OBJECT: ObjectKey = u64::MAX;

/// Per-object state: what the object's frames are classified with.
#[derive(Debug, Clone, Default)]
struct Track {
    active: Option<u32>,
    /// The submodel the edge selected for this object, until it is active.
    wanted: Option<u32>,
    /// The frame (of `end_frame`'s count) the object was last seen on.
    last_seen: u64,
    last: Option<FrameResult>,
    /// Frames since the last model run for this object.
    since: u32,
}

/// Counters exposed by the `stats` property.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub frames: u64,
    pub hits: u64,
    pub misses: u64,
    pub offloads: u64,
    pub offload_failures: u64,
    /// Changes of the active submodel.
    pub swaps: u64,
    pub evictions: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub device_time_us: u64,
    pub edge_time_us: u64,
    /// -1 when no submodel is cached.
    pub active_submodel: i32,
    /// Submodels fetched and compiled by the swap worker.
    pub fetches: u64,
    /// Evicted submodels brought back from their kept compiled plan (no fetch, no compile).
    pub plan_reuses: u64,
    /// Totals of the swap phases over all fetches (microseconds, on the swap worker).
    pub swap: SwapTimings,
    /// Sum over fetches of the time from the miss that asked for the submodel to the frame
    /// boundary where it became usable.
    pub swap_wait_us: u64,
    /// Objects tracked now (1 for the whole frame).
    pub objects: u64,
    /// Objects forgotten after `track_timeout` frames unseen.
    pub objects_dropped: u64,
    /// Misses not offloaded because the frame's offload budget was spent.
    pub deferred: u64,
    /// Results reused without a model run (`interval`, late frames).
    pub reused: u64,
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
    /// Keep the compiled plans of evicted submodels in memory (an evicted submodel comes back
    /// without a download or a compile).
    pub keep_compiled: bool,
    /// Longest wait of a `sync` miss for the edge.
    pub timeout: Duration,
    /// Classify an object on every `interval`-th of its frames, reuse its result in between.
    pub interval: u32,
    /// Forget an object not seen for this many frames.
    pub track_timeout: u64,
}

impl Config {
    /// A configuration with the defaults of the element's other properties.
    pub fn new(mode: Mode, offload: Offload, threshold: f32, cache_size: usize) -> Config {
        Config {
            mode,
            offload,
            threshold,
            cache_size,
            keep_compiled: true,
            timeout: Duration::from_secs(1),
            interval: 1,
            track_timeout: 30,
        }
    }
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

/// A submodel that became usable on this frame (for the `cachenet-swap` bus message).
#[derive(Debug, Clone, PartialEq)]
pub struct SwapEvent {
    pub submodel: u32,
    /// Fetched and compiled (false: a kept compiled plan was reused).
    pub fetched: bool,
    pub timings: SwapTimings,
    pub bytes: u64,
    /// From the miss that asked for it to this frame boundary.
    pub wait_us: u64,
}

/// The per-element CacheNet runtime.
pub struct Runtime {
    manifest: Arc<Manifest>,
    config: Config,
    full: Option<Model>,
    cache: SubmodelCache<Model>,
    /// Compiled plans of every submodel seen (when keep_compiled).
    plans: HashMap<u32, Model>,
    /// The current object's active submodel and wanted one (the rest of its state, and every
    /// other object's, is in `tracks`).
    active: Option<u32>,
    wanted: Option<u32>,
    current: Option<ObjectKey>,
    tracks: HashMap<ObjectKey, Track>,
    /// Frames seen (`end_frame`).
    frame: u64,
    /// Async requests in flight: request id -> the object that asked.
    asked_by: HashMap<String, ObjectKey>,
    /// Fetches asked of the swap worker: id -> when.
    fetching: HashMap<u32, Instant>,
    failed_fetch: HashSet<u32>,
    /// cache-dir refused the last download (one warning per streak).
    store_failing: bool,
    remote: Option<Remote>,
    offloader: Option<OffloadWorker>,
    swapper: Option<SwapWorker>,
    generation: Generation,
    backoff: Backoff,
    stats: Stats,
    tensor: Vec<f32>,
    logits: Vec<f32>,
    request_seq: u64,
    warnings: Vec<String>,
    /// Settings errors for the application (a refused token), taken by the element.
    errors: Vec<String>,
    /// The edge refused this element's token: no more requests until a restart.
    refused: bool,
    swap_events: Vec<SwapEvent>,
    recovered: bool,
}

impl Runtime {
    /// `full`: the full model (needed in device mode). `initial`: submodels to start with,
    /// most recently used first (the first becomes active). `generation`: the element's flush
    /// generation.
    pub fn new(
        manifest: Manifest,
        config: Config,
        full: Option<Model>,
        initial: Vec<(u32, Model)>,
        edge: Option<EdgeClient>,
        store: Option<Store>,
        generation: Generation,
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
        let mut plans = HashMap::new();
        let mut active = None;
        for (id, model) in initial.into_iter().take(config.cache_size).rev() {
            if config.keep_compiled {
                plans.insert(id, model.clone());
            }
            cache.insert(id, model);
            active = Some(id);
        }
        let remote = edge.map(|edge| Remote {
            edge,
            store,
            manifest: manifest.clone(),
        });
        let offloading = matches!(config.mode, Mode::CacheNet | Mode::Edge);
        let offloader = match &remote {
            Some(r) if offloading => Some(offload_worker(r.clone(), generation.clone())),
            _ => None,
        };
        let swapper = match &remote {
            Some(r) if config.mode == Mode::CacheNet => {
                Some(swap_worker(r.clone(), generation.clone()))
            }
            _ => None,
        };
        let n = manifest.input.len();
        Ok(Runtime {
            stats: Stats::default(),
            manifest,
            config,
            full,
            cache,
            plans,
            active,
            wanted: None,
            current: Some(FRAME_OBJECT),
            tracks: HashMap::from([(FRAME_OBJECT, Track::default())]),
            frame: 0,
            asked_by: HashMap::new(),
            fetching: HashMap::new(),
            failed_fetch: HashSet::new(),
            store_failing: false,
            remote,
            offloader,
            swapper,
            generation,
            backoff: Backoff::default(),
            tensor: vec![0.0; n],
            logits: Vec::new(),
            request_seq: 0,
            warnings: Vec::new(),
            errors: Vec::new(),
            refused: false,
            swap_events: Vec::new(),
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
            objects: self.tracks.len() as u64,
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

    /// Settings errors found since the last call (the edge refused the token).
    pub fn take_errors(&mut self) -> Vec<String> {
        std::mem::take(&mut self.errors)
    }

    /// No request goes to the edge: backing off after a failure, or refused for good.
    fn offload_blocked(&self) -> bool {
        self.refused || self.backoff.blocked()
    }

    /// Submodels that became usable since the last call.
    pub fn take_swap_events(&mut self) -> Vec<SwapEvent> {
        std::mem::take(&mut self.swap_events)
    }

    /// True once after the edge answers again following failures.
    pub fn take_recovered(&mut self) -> bool {
        std::mem::take(&mut self.recovered)
    }

    /// Whether an edge request is in flight.
    pub fn offload_in_flight(&self) -> bool {
        self.offloader.as_ref().is_some_and(|w| w.pending > 0)
    }

    /// Whether a submodel is being fetched or compiled.
    pub fn swap_in_flight(&self) -> bool {
        !self.fetching.is_empty()
    }

    /// After a flush (seek; the element has moved the generation): answers asked for before
    /// it are dropped, work may be asked again; cached submodels stay.
    pub fn flushed(&mut self) {
        self.fetching.clear();
        self.wanted = None;
        self.asked_by.clear();
        for t in self.tracks.values_mut() {
            t.wanted = None;
        }
    }

    /// Save the current object's state into `tracks`.
    fn park(&mut self) {
        if let Some(key) = self.current.take() {
            let t = self.tracks.entry(key).or_default();
            t.active = self.active;
            t.wanted = self.wanted;
        }
    }

    /// Make `key` the current object (a new one starts with the most recently used submodel).
    fn enter(&mut self, key: ObjectKey) {
        if self.current == Some(key) {
            return;
        }
        self.park();
        let frame = self.frame;
        let cache = &self.cache;
        let t = self.tracks.entry(key).or_insert_with(|| Track {
            active: cache.ids_mru().first().copied(),
            last_seen: frame,
            ..Track::default()
        });
        self.active = t.active;
        self.wanted = t.wanted;
        self.current = Some(key);
    }

    /// The end of a video frame: objects not seen for `track_timeout` frames are forgotten.
    pub fn end_frame(&mut self) {
        self.park();
        self.frame += 1;
        let (frame, timeout) = (self.frame, self.config.track_timeout.max(1));
        let before = self.tracks.len();
        self.tracks
            .retain(|&k, t| k == FRAME_OBJECT || frame - t.last_seen <= timeout);
        self.stats.objects_dropped += (before - self.tracks.len()) as u64;
        self.enter(FRAME_OBJECT);
    }

    /// The object's last result, marked reused, when this frame need not run a model for it:
    /// within `interval` of its last run, or `late` (the sink reported lateness). None when the
    /// object has no result yet or is due.
    pub fn reuse(&mut self, key: ObjectKey, late: bool) -> Option<FrameResult> {
        let interval = self.config.interval.max(1);
        let frame = self.frame;
        let t = self.tracks.get_mut(&key)?;
        let last = t.last.as_ref()?;
        if !late && t.since + 1 >= interval {
            return None;
        }
        let mut r = last.clone();
        r.reused = true;
        t.since += 1;
        t.last_seen = frame;
        self.stats.reused += 1;
        Some(r)
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
            deferred: false,
            reused: false,
            probabilities: c.probabilities.clone(),
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
            deferred: false,
            reused: false,
            probabilities: Vec::new(),
        }
    }

    fn run_cached(&mut self, id: u32) -> Option<Classification> {
        let t = Instant::now();
        let model = self.cache.get_mut(id)?;
        let r = model.run_into(&self.tensor, &mut self.logits);
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
        if self.wanted == Some(id) {
            self.wanted = None;
        }
    }

    /// Put a compiled submodel into the LRU cache (most recently used).
    fn insert(&mut self, id: u32, model: Model) {
        if self.config.keep_compiled {
            self.plans.insert(id, model.clone());
        }
        if self.cache.insert(id, model).is_some() {
            self.stats.evictions += 1;
        }
        if let Some(store) = self.remote.as_ref().and_then(|o| o.store.as_ref())
            && let Some(s) = self.manifest.submodel(id)
        {
            store.touch(&s.sha256);
        }
    }

    /// The edge selected `id`: make it active now if it is ready (cached, or a kept compiled
    /// plan), else ask the swap worker for it; it becomes active when it arrives.
    fn want(&mut self, id: u32, asked: Instant) {
        if self.cache.contains(id) {
            self.cache.get_mut(id);
            self.set_active(id);
            return;
        }
        if let Some(model) = self.plans.get(&id).cloned() {
            self.insert(id, model);
            self.stats.plan_reuses += 1;
            self.swap_events.push(SwapEvent {
                submodel: id,
                fetched: false,
                timings: SwapTimings::default(),
                bytes: 0,
                wait_us: asked.elapsed().as_micros() as u64,
            });
            self.set_active(id);
            return;
        }
        self.wanted = Some(id);
        if self.fetching.contains_key(&id) {
            return;
        }
        let Some(w) = self.swapper.as_mut() else {
            return;
        };
        match w.submit(id) {
            Ok(true) => {
                self.fetching.insert(id, asked);
            }
            Ok(false) => {} // the queue is full: the next miss asks again
            Err(e) => self.warnings.push(e),
        }
    }

    /// Apply finished background work (at a frame boundary).
    fn poll(&mut self) {
        loop {
            let next = match self.swapper.as_mut() {
                Some(w) => w.try_next(),
                None => Ok(None),
            };
            match next {
                Ok(Some((id, r))) => self.fetched(id, r),
                Ok(None) => break,
                Err(warning) => {
                    self.warnings.push(warning);
                    self.fetching.clear();
                    break;
                }
            }
        }
        if self.config.offload == Offload::Async {
            let next = match self.offloader.as_mut() {
                Some(w) => w.try_next(),
                None => Ok(None),
            };
            match next {
                Ok(Some((rid, r))) => {
                    let asked = Instant::now();
                    let key = self.asked_by.remove(&rid);
                    match r {
                        Ok(o) => {
                            self.account(&o);
                            self.edge_ok();
                            // The object that asked, if it is still tracked.
                            if let Some(key) = key.filter(|k| self.tracks.contains_key(k)) {
                                let back = self.current;
                                self.enter(key);
                                self.want(o.response.submodel_id, asked);
                                if let Some(b) = back {
                                    self.enter(b);
                                }
                            }
                        }
                        Err(e) => self.edge_failed(e),
                    }
                }
                Ok(None) => {}
                Err(warning) => self.warnings.push(warning),
            }
        }
    }

    fn fetched(&mut self, id: u32, r: Result<Fetched, String>) {
        let asked = self.fetching.remove(&id);
        match r {
            Ok(f) => {
                self.failed_fetch.remove(&id);
                match (&f.store_error, self.store_failing) {
                    (Some(e), false) => {
                        self.warnings
                            .push(format!("submodel {id} is used but not kept: {e}"));
                        self.store_failing = true;
                    }
                    (None, true) if f.timings.download_us > 0 => self.store_failing = false,
                    _ => {}
                }
                self.stats.fetches += 1;
                self.stats.bytes_down += f.traffic.down;
                let t = &mut self.stats.swap;
                t.download_us += f.timings.download_us;
                t.verify_us += f.timings.verify_us;
                t.store_us += f.timings.store_us;
                t.parse_us += f.timings.parse_us;
                t.optimise_us += f.timings.optimise_us;
                t.first_run_us += f.timings.first_run_us;
                t.cpu_us += f.timings.cpu_us;
                let wait_us = asked.map_or(0, |a| a.elapsed().as_micros() as u64);
                self.stats.swap_wait_us += wait_us;
                self.swap_events.push(SwapEvent {
                    submodel: id,
                    fetched: true,
                    timings: f.timings,
                    bytes: f.traffic.down,
                    wait_us,
                });
                let current = self.current;
                let others: Vec<ObjectKey> = self
                    .tracks
                    .iter()
                    .filter(|(k, t)| Some(**k) != current && t.wanted == Some(id))
                    .map(|(k, _)| *k)
                    .collect();
                if self.wanted != Some(id) && others.is_empty() {
                    // The edge has selected another submodel since: keep the compiled plan
                    // for later, but do not evict a cached submodel for it.
                    if self.config.keep_compiled {
                        self.plans.insert(id, f.model);
                    }
                    return;
                }
                self.insert(id, f.model);
                if self.wanted == Some(id) {
                    self.set_active(id);
                }
                for k in others {
                    let t = self.tracks.get_mut(&k).expect("listed above");
                    t.active = Some(id);
                    t.wanted = None;
                    self.stats.swaps += 1;
                }
            }
            Err(e) => {
                if self.wanted == Some(id) {
                    self.wanted = None;
                }
                for t in self.tracks.values_mut() {
                    if t.wanted == Some(id) {
                        t.wanted = None;
                    }
                }
                self.stats.offload_failures += 1;
                if self.failed_fetch.insert(id) {
                    self.warnings.push(e);
                }
            }
        }
    }

    fn account(&mut self, o: &InferOutcome) {
        self.stats.bytes_up += o.traffic.up;
        self.stats.bytes_down += o.traffic.down;
        self.stats.edge_time_us += o.took.as_micros() as u64;
    }

    /// The frame's result from the edge's answer. The label is the manifest's own for the
    /// class id (never text from the network).
    fn edge_result(&self, o: &InferOutcome, submodel: Option<u32>) -> FrameResult {
        let c = Classification::from_probabilities(o.response.probabilities.clone());
        let mut res = self.result(&c, Source::Edge, false, submodel);
        let class = o.response.class_id as usize;
        res.class_id = class as i32;
        res.label = self.manifest.labels[class].clone();
        res.confidence = o.response.probabilities[class];
        res.entropy = o.response.entropy;
        res
    }

    fn edge_failed(&mut self, e: EdgeError) {
        self.stats.offload_failures += 1;
        if e.refused {
            // A settings error: reported once, never retried (only a restart with another
            // token can change the answer).
            if !self.refused {
                self.refused = true;
                self.errors.push(format!(
                    "the edge server refused the token property ({e}); frames are classified \
                     on the device only until the element restarts with a token the edge accepts"
                ));
            }
            return;
        }
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

    /// One run of the model a frame runs first (the full model in device mode, else the active
    /// submodel) on a blank input, outside the counters: how long a frame takes at least.
    pub fn warm_up(&mut self) -> Duration {
        self.tensor.fill(0.0);
        let t = Instant::now();
        let r = match self.config.mode {
            Mode::Device => self
                .full
                .as_ref()
                .map(|f| f.run_into(&self.tensor, &mut self.logits)),
            _ => self
                .active
                .and_then(|a| self.cache.get_mut(a))
                .map(|m| m.run_into(&self.tensor, &mut self.logits)),
        };
        let took = t.elapsed();
        if let Some(Err(e)) = r {
            self.warnings.push(format!("warm-up run: {e}"));
        }
        took
    }

    /// Classify one frame given as HWC u8 pixels at the model's input size (the whole frame is
    /// one object; the caller ends the frame with [`Runtime::end_frame`]).
    pub fn process(&mut self, hwc: &[u8]) -> FrameResult {
        self.process_object(FRAME_OBJECT, hwc, true)
    }

    /// Classify one object's pixels (HWC u8 at the model's input size) with the object's own
    /// active submodel. `may_offload`: whether a miss may go to the edge (false once the
    /// frame's offload budget is spent: the local result comes back marked `deferred`).
    pub fn process_object(&mut self, key: ObjectKey, hwc: &[u8], may_offload: bool) -> FrameResult {
        self.enter(key);
        let r = self.classify(hwc, may_offload);
        let t = self.tracks.get_mut(&key).expect("entered");
        t.last_seen = self.frame;
        t.since = 0;
        t.last = Some(r.clone());
        r
    }

    fn classify(&mut self, hwc: &[u8], may_offload: bool) -> FrameResult {
        self.stats.frames += 1;
        normalize_into(hwc, &self.manifest.input, &mut self.tensor);
        match self.config.mode {
            Mode::Device => {
                let t = Instant::now();
                let full = self.full.as_ref().expect("checked in new()");
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
                if !may_offload {
                    return self.deferred(None);
                }
                self.offload_sync(hwc, None)
            }
            Mode::CacheNet => {
                self.poll();
                self.process_cachenet(hwc, may_offload)
            }
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

    /// A miss kept local: the frame's offload budget is spent.
    fn deferred(&mut self, local: Option<FrameResult>) -> FrameResult {
        self.stats.deferred += 1;
        let mut r = local.unwrap_or_else(|| {
            let mut r = self.none_result();
            r.degraded = false;
            r
        });
        r.deferred = true;
        r
    }

    fn process_cachenet(&mut self, hwc: &[u8], may_offload: bool) -> FrameResult {
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
        if !may_offload {
            return self.deferred(local);
        }
        match self.config.offload {
            Offload::Sync => self.offload_sync(hwc, local),
            Offload::Async => {
                if self.offload_blocked() {
                    return Self::degraded(local, self.none_result());
                }
                // One request in flight at most, and none while the submodel the edge
                // selected is on its way (the answer would select it again).
                if !self.offload_in_flight() && !self.swap_in_flight() {
                    let rid = self.next_request_id();
                    let job = InferJob {
                        hwc: hwc.to_vec(),
                        cached: self.cache.ids_mru(),
                        request_id: rid.clone(),
                    };
                    let key = self.current.unwrap_or(FRAME_OBJECT);
                    let w = self.offloader.as_mut().expect("checked above");
                    match w.submit(job) {
                        Ok(true) => {
                            self.stats.offloads += 1;
                            self.asked_by.insert(rid, key);
                        }
                        Ok(false) => {}
                        Err(e) => self.warnings.push(e),
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

    /// Ask the edge about this frame and wait for its answer (bounded by the timeout, cut
    /// short by a flush). Never waits for a download or a compile.
    fn offload_sync(&mut self, hwc: &[u8], local: Option<FrameResult>) -> FrameResult {
        if self.offload_blocked() {
            return Self::degraded(local, self.none_result());
        }
        let asked = Instant::now();
        let cached = if self.config.mode == Mode::Edge {
            // The Edge baseline only wants the label: pretend every submodel is cached so that
            // nothing is downloaded.
            self.manifest.submodels.iter().map(|s| s.id).collect()
        } else {
            self.cache.ids_mru()
        };
        let rid = self.next_request_id();
        let job = InferJob {
            hwc: hwc.to_vec(),
            cached,
            request_id: rid.clone(),
        };
        let deadline = asked + self.config.timeout + Duration::from_millis(100);
        let at = self.generation.current();
        let Some(w) = self.offloader.as_mut() else {
            return Self::degraded(local, self.none_result());
        };
        let answer = match w.submit(job) {
            // Answers to earlier requests that timed out are skipped.
            Ok(true) => loop {
                match w.wait(at, deadline) {
                    Ok(Some((id, _))) if id != rid => continue,
                    other => break other.map(|o| o.map(|(_, r)| r)),
                }
            },
            Ok(false) => Ok(None), // an earlier request still occupies the worker
            Err(e) => Err(e),
        };
        self.stats.offloads += 1;
        let outcome = match answer {
            Ok(Some(r)) => r,
            // A wait cut short by a flush: not an edge failure.
            Ok(None) if self.generation.current() != at => {
                return Self::degraded(local, self.none_result());
            }
            Ok(None) => Err(EdgeError::from("no answer within timeout-ms")),
            Err(warning) => {
                self.warnings.push(warning);
                Err(EdgeError::from("the offload worker stopped"))
            }
        };
        match outcome {
            Ok(o) => {
                self.account(&o);
                self.edge_ok();
                if self.config.mode == Mode::Edge {
                    return self.edge_result(&o, None);
                }
                let id = o.response.submodel_id;
                self.want(id, asked);
                self.edge_result(&o, Some(id))
            }
            Err(e) => {
                self.edge_failed(e);
                Self::degraded(local, self.none_result())
            }
        }
    }
}
