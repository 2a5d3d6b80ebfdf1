//! The device side of CacheNet, independent of GStreamer: the LRU cache of submodels, the
//! hit/miss decision (hit iff H < T), offloading to the edge, the submodel swap, back-off while
//! the edge is down, and the counters.
//!
//! The streaming thread only runs models that are ready. Edge requests run on the offload
//! worker (a `sync` miss waits for the answer, bounded by `timeout-ms` and cut short by a
//! flush; an `async` miss does not wait); fetching, verifying, storing and compiling a submodel
//! run on the swap worker, and a compiled submodel becomes active at the next frame boundary.
//!
//! Each tracked object (the whole frame, or a region with `regions=roi`) owns its state: its
//! active submodel (chosen from one shared LRU cache), the submodel the edge selected for it and
//! its last result; an object not seen for `track_timeout` frames is forgotten. One
//! classification returns an [`Outcome`]; the end of a frame returns its [`FrameEvents`] (swaps,
//! warnings, errors): the element publishes both.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cachenet_core::cache::SubmodelCache;
use cachenet_core::engine::{Engine, Model};
use cachenet_core::manifest::{InputSpec, Manifest};
use cachenet_core::maths::Classification;
use cachenet_core::preprocess::normalize_into;
use gst::glib;

use crate::audit::{Agreement, AuditConfig, Auditor, Moved};
use crate::edge::{EdgeClient, EdgeError, EdgeEvent};
use crate::remote::{
    Fetched, InferJob, InferOutcome, OffloadWorker, PrefetchWorker, Remote, SwapTimings,
    SwapWorker, audit_worker, offload_worker, prefetch_worker, swap_worker,
};
use crate::store::Store;
use crate::worker::Generation;

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
    /// The entropy threshold in use for the result's submodel (calibrated with
    /// `target-agreement`; the configured one without a submodel).
    pub threshold: f32,
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
    /// Submodels fetched ahead of need (`prefetch`).
    pub prefetches: u64,
    /// Audits of hits sent to the edge, answered, answered with the same class, dropped (the
    /// offload path was busy) and failed (no answer).
    pub audits_sent: u64,
    pub audits: u64,
    pub audit_agree: u64,
    pub audits_dropped: u64,
    pub audits_failed: u64,
    /// Per audited submodel: agreement over its last audits and its threshold in use.
    pub agreements: Vec<Agreement>,
    /// The threshold in use for the whole frame's active submodel.
    pub threshold: f32,
    /// Each model loaded so far and its plan ("submodel 0: direct", "full model: tract; the own
    /// plan refused the graph: grouped Conv").
    pub plans: Arc<Vec<String>>,
    /// The edge in use ("" without one), the edges in this camera's preference order, and
    /// the failovers away from an edge and returns to the preferred one so far.
    pub edge: Arc<str>,
    pub edges: Arc<Vec<String>>,
    pub failovers: u64,
    pub edge_returns: u64,
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
    /// After start, fetch the manifest's other submodels in the background (mode cachenet,
    /// with an edge), one at a time and only while no swap the edge asked for is in flight.
    pub prefetch: bool,
    /// Audits of hits and threshold calibration (mode cachenet, with an edge).
    pub audit: AuditConfig,
    /// What submodels fetched later are loaded on (the element's `backend`).
    pub engine: Engine,
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
            prefetch: false,
            audit: AuditConfig::default(),
            engine: Engine::default(),
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

/// What one classification (of a frame, or of one region) gave.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub result: FrameResult,
    /// A request went to the edge for it (counts against the frame's `max-offloads`).
    pub offloaded: bool,
    /// Time in models: the device's runs and the edge's answer (microseconds).
    pub model_us: u64,
}

impl Outcome {
    /// An object's last result given again without a model run.
    pub fn reused(result: FrameResult) -> Outcome {
        Outcome {
            result,
            offloaded: false,
            model_us: 0,
        }
    }
}

/// What happened in one video frame besides its results, for the element to post.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FrameEvents {
    /// Edge failures, rejected downloads, worker restarts.
    pub warnings: Vec<String>,
    /// Settings errors for the application (the edge refused the token).
    pub errors: Vec<String>,
    /// Submodels that became usable.
    pub swaps: Vec<SwapEvent>,
    /// The edge answers again after failures.
    pub recovered: bool,
    /// Back on the preferred edge of several.
    pub returns: Vec<String>,
    /// Audits answered.
    pub audits: Vec<AuditEvent>,
    /// Thresholds that calibration moved.
    pub thresholds: Vec<Moved>,
    /// Models loaded on this frame: which plan runs each (logged once per model).
    pub plans: Vec<String>,
}

/// An answered audit (for the `cachenet-audit` bus message).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    /// The frame (of `end_frame`'s count) whose hit was audited.
    pub frame: u64,
    pub object: ObjectKey,
    pub submodel: u32,
    pub local_class: i32,
    pub edge_class: i32,
    pub agree: bool,
    /// The submodel's threshold after this audit.
    pub threshold: f32,
}

/// An audit on its way to the edge.
#[derive(Debug, Clone, Copy)]
struct AuditAsked {
    frame: u64,
    object: ObjectKey,
    submodel: u32,
    local_class: i32,
}

/// What the classification in progress did (reset for each one).
#[derive(Debug, Default)]
struct Call {
    offloaded: bool,
    model_us: u64,
}

/// An object's pixels at each input the set's models take (scaled on first use).
pub trait Pixels {
    /// HWC u8 pixels at input `i` of [`Manifest::inputs`] (its width, height and color).
    fn at(&mut self, i: usize) -> &[u8];
}

/// The per-element CacheNet runtime.
pub struct Runtime {
    manifest: Arc<Manifest>,
    config: Config,
    full: Option<Model>,
    cache: SubmodelCache<Model>,
    /// Compiled plans of every submodel seen (when keep_compiled).
    plans: HashMap<u32, Model>,
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
    prefetcher: Option<PrefetchWorker>,
    /// Audits of hits: the draws and per-submodel thresholds, the worker, what is asked.
    auditor: Auditor,
    auditing: Option<OffloadWorker>,
    audits_asked: HashMap<String, AuditAsked>,
    /// Submodels still to prefetch, in manifest order, and the one on its way.
    to_prefetch: VecDeque<u32>,
    prefetching: Option<u32>,
    generation: Generation,
    backoff: Backoff,
    stats: Stats,
    /// The distinct inputs of the set's models ([`Manifest::inputs`], whose indices
    /// [`Pixels::at`] takes), and which one each model takes.
    inputs: Vec<InputSpec>,
    full_input: usize,
    submodel_input: Vec<usize>,
    /// One tensor per input, and whether it holds the current object's pixels.
    tensors: Vec<Vec<f32>>,
    fresh: Vec<bool>,
    logits: Vec<f32>,
    request_seq: u64,
    /// This frame's events so far (returned by `end_frame`).
    events: FrameEvents,
    call: Call,
    /// The edge refused this element's token: no more requests until a restart.
    refused: bool,
    /// A provider fallback was warned about (one warning per element).
    provider_warned: bool,
    /// Each model loaded so far ("full model", "submodel 3") and its plan line.
    plan_lines: BTreeMap<String, String>,
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
            engine: config.engine.clone(),
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
        let prefetcher =
            match &remote {
                Some(r) if config.mode == Mode::CacheNet && config.prefetch => Some(
                    prefetch_worker(r.clone(), generation.clone(), config.keep_compiled),
                ),
                _ => None,
            };
        let auditing = match &remote {
            Some(r) if config.mode == Mode::CacheNet && config.audit.interval > 0 => {
                Some(audit_worker(r.clone(), generation.clone()))
            }
            _ => None,
        };
        let auditor = Auditor::new(config.audit, config.threshold, manifest.submodels.len());
        let to_prefetch = match prefetcher {
            Some(_) => manifest
                .submodels
                .iter()
                .map(|m| m.id)
                .filter(|id| !cache.contains(*id))
                .collect(),
            None => VecDeque::new(),
        };
        let inputs: Vec<InputSpec> = manifest.inputs().into_iter().cloned().collect();
        let index = |spec: &InputSpec| inputs.iter().position(|i| i == spec).expect("listed");
        let full_input = index(manifest.full_input());
        let submodel_input = (0..manifest.submodels.len() as u32)
            .map(|id| index(manifest.submodel_input(id)))
            .collect();
        let tensors = inputs.iter().map(|i| vec![0.0; i.len()]).collect();
        let fresh = vec![false; inputs.len()];
        Ok(Runtime {
            stats: Stats {
                edges: Arc::new(remote.as_ref().map(|r| r.edge.edges()).unwrap_or_default()),
                ..Stats::default()
            },
            manifest,
            config,
            full,
            cache,
            plans,
            tracks: HashMap::from([(
                FRAME_OBJECT,
                Track {
                    active,
                    ..Track::default()
                },
            )]),
            frame: 0,
            asked_by: HashMap::new(),
            fetching: HashMap::new(),
            failed_fetch: HashSet::new(),
            store_failing: false,
            remote,
            offloader,
            swapper,
            prefetcher,
            auditor,
            auditing,
            audits_asked: HashMap::new(),
            to_prefetch,
            prefetching: None,
            generation,
            backoff: Backoff::default(),
            inputs,
            full_input,
            submodel_input,
            tensors,
            fresh,
            logits: Vec::new(),
            request_seq: 0,
            events: FrameEvents::default(),
            call: Call::default(),
            refused: false,
            provider_warned: false,
            plan_lines: BTreeMap::new(),
        }
        .with_plans_noted())
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The models loaded at start, noted as [`Runtime::note_plan`] does.
    fn with_plans_noted(mut self) -> Runtime {
        if let Some(full) = self.full.clone() {
            self.note_plan("full model".into(), &full);
        }
        for id in self.cache.ids_mru() {
            if let Some(m) = self.cache.peek(id).cloned() {
                self.note_plan(format!("submodel {id}"), &m);
            }
        }
        self
    }

    /// A model was loaded: which plan runs it goes to this frame's events (logged once), and a
    /// provider that could not start is one warning per element.
    fn note_plan(&mut self, what: String, model: &Model) {
        let plan = model.plan();
        let line = format!("{what}: {plan}");
        self.events.plans.push(line.clone());
        // `stats` shares the list; it is built again only when a model is loaded.
        self.plan_lines.insert(what.clone(), line);
        self.stats.plans = Arc::new(self.plan_lines.values().cloned().collect());
        if let Some(w) = &plan.warning
            && !self.provider_warned
        {
            self.provider_warned = true;
            self.events.warnings.push(format!("{what}: {w}"));
        }
    }

    /// The counters, with the active submodel (of the whole frame) filled in.
    pub fn stats(&self) -> Stats {
        let active = self.active();
        let (edge, failovers, edge_returns) = match &self.remote {
            Some(r) => r.edge.status(),
            None => (Arc::from(""), 0, 0),
        };
        Stats {
            edge,
            failovers,
            edge_returns,
            active_submodel: active.map_or(-1, |a| a as i32),
            objects: self.tracks.len() as u64,
            agreements: self.auditor.agreements(),
            threshold: self.threshold_of(active),
            ..self.stats.clone()
        }
    }

    /// Cached submodel ids, most recently used first.
    pub fn cached(&self) -> Vec<u32> {
        self.cache.ids_mru()
    }

    /// The whole frame's active submodel.
    pub fn active(&self) -> Option<u32> {
        self.tracks.get(&FRAME_OBJECT).and_then(|t| t.active)
    }

    /// No request goes to the edge: backing off after a failure, or refused for good.
    fn offload_blocked(&self) -> bool {
        self.refused || self.backoff.blocked()
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
        self.asked_by.clear();
        self.audits_asked.clear();
        if let Some(id) = self.prefetching.take() {
            self.to_prefetch.push_front(id);
        }
        for t in self.tracks.values_mut() {
            t.wanted = None;
        }
    }

    /// The object's state; a new object starts with the most recently used submodel.
    fn track(&mut self, key: ObjectKey) -> &mut Track {
        let (frame, cache) = (self.frame, &self.cache);
        self.tracks.entry(key).or_insert_with(|| Track {
            active: cache.ids_mru().first().copied(),
            last_seen: frame,
            ..Track::default()
        })
    }

    /// The end of a video frame: objects not seen for `track_timeout` frames are forgotten.
    /// Returns what happened in the frame besides its results.
    pub fn end_frame(&mut self) -> FrameEvents {
        self.frame += 1;
        let (frame, timeout) = (self.frame, self.config.track_timeout.max(1));
        let before = self.tracks.len();
        self.tracks
            .retain(|&k, t| k == FRAME_OBJECT || frame - t.last_seen <= timeout);
        self.stats.objects_dropped += (before - self.tracks.len()) as u64;
        self.track(FRAME_OBJECT);
        self.poll_audits();
        if let Some(r) = &self.remote {
            for e in r.edge.take_events() {
                match e {
                    EdgeEvent::Warning(w) => self.events.warnings.push(w),
                    EdgeEvent::Returned(n) => self.events.returns.push(n),
                }
            }
        }
        std::mem::take(&mut self.events)
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
            threshold: self.threshold_of(submodel),
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
            threshold: self.config.threshold,
        }
    }

    /// The threshold in use for `submodel` (the configured one for none).
    fn threshold_of(&self, submodel: Option<u32>) -> f32 {
        submodel.map_or(self.config.threshold, |id| self.auditor.threshold(id))
    }

    /// A hit of `submodel` (class `class_id`) on object `key`: drawn for an audit one time in
    /// `audit-interval`, its model input goes to the edge on the audit worker; the frame keeps
    /// its local result and never waits. An audit never takes a miss's place: while an edge
    /// request is in flight, the edge is backed off, or the last audit is unanswered, the
    /// drawn audit is dropped and counted.
    fn maybe_audit(&mut self, key: ObjectKey, px: &mut dyn Pixels, submodel: u32, class_id: i32) {
        if self.auditing.is_none() || !self.auditor.draw() {
            return;
        }
        let busy = self.offload_blocked()
            || self.offload_in_flight()
            || self.auditing.as_ref().is_some_and(|w| w.pending > 0);
        if busy {
            self.stats.audits_dropped += 1;
            return;
        }
        let rid = self.next_request_id();
        let job = InferJob {
            hwc: px.at(self.full_input).to_vec(),
            cached: self.cache.ids_mru(),
            request_id: rid.clone(),
            audited: Some(submodel),
        };
        let w = self.auditing.as_mut().expect("checked above");
        match w.submit(job) {
            Ok(true) => {
                self.stats.audits_sent += 1;
                self.audits_asked.insert(
                    rid,
                    AuditAsked {
                        frame: self.frame,
                        object: key,
                        submodel,
                        local_class: class_id,
                    },
                );
            }
            Ok(false) => self.stats.audits_dropped += 1,
            Err(e) => self.events.warnings.push(e),
        }
    }

    /// Take the audits the edge has answered (at a frame boundary): agreement per submodel,
    /// calibration, and an event for each.
    fn poll_audits(&mut self) {
        loop {
            let next = match self.auditing.as_mut() {
                Some(w) => w.try_next(),
                None => return,
            };
            let (rid, r) = match next {
                Ok(Some(answer)) => answer,
                Ok(None) => return,
                Err(warning) => {
                    self.events.warnings.push(warning);
                    self.audits_asked.clear();
                    return;
                }
            };
            let Some(asked) = self.audits_asked.remove(&rid) else {
                continue;
            };
            let o = match r {
                Ok(o) => o,
                Err(_) => {
                    // The next miss finds out whether the edge is down, and warns.
                    self.stats.audits_failed += 1;
                    continue;
                }
            };
            self.stats.bytes_up += o.traffic.up;
            self.stats.bytes_down += o.traffic.down;
            self.stats.audits += 1;
            let edge_class = o.response.class_id as i32;
            let agree = edge_class == asked.local_class;
            self.stats.audit_agree += u64::from(agree);
            let recorded = self.auditor.record(asked.submodel, agree);
            self.events.thresholds.extend(recorded.moved);
            self.events.warnings.extend(recorded.warning);
            self.events.audits.push(AuditEvent {
                frame: asked.frame,
                object: asked.object,
                submodel: asked.submodel,
                local_class: asked.local_class,
                edge_class,
                agree,
                threshold: self.auditor.threshold(asked.submodel),
            });
        }
    }

    /// Time spent in a model for the classification in progress.
    fn spent(&mut self, t: Instant) {
        let us = t.elapsed().as_micros() as u64;
        self.stats.device_time_us += us;
        self.call.model_us += us;
    }

    /// The tensor of input `i` holds the object's pixels (normalised once per object).
    fn prepare(&mut self, px: &mut dyn Pixels, i: usize) {
        if !self.fresh[i] {
            normalize_into(px.at(i), &self.inputs[i], &mut self.tensors[i]);
            self.fresh[i] = true;
        }
    }

    fn submodel_input(&self, id: u32) -> usize {
        self.submodel_input
            .get(id as usize)
            .copied()
            .unwrap_or(self.full_input)
    }

    fn run_cached(&mut self, id: u32, px: &mut dyn Pixels) -> Option<Classification> {
        if !self.cache.contains(id) {
            return None;
        }
        let i = self.submodel_input(id);
        self.prepare(px, i);
        let t = Instant::now();
        let model = self.cache.get_mut(id)?;
        let r = model.run_into(&self.tensors[i], &mut self.logits);
        self.spent(t);
        match r {
            Ok(()) => Some(Classification::from_logits(&self.logits)),
            Err(e) => {
                self.events.warnings.push(format!("submodel {id}: {e}"));
                None
            }
        }
    }

    fn set_active(&mut self, key: ObjectKey, id: u32) {
        let t = self.track(key);
        let changed = t.active != Some(id);
        t.active = Some(id);
        if t.wanted == Some(id) {
            t.wanted = None;
        }
        self.stats.swaps += u64::from(changed);
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

    /// Bring kept plan `id` back into the cache as object `key`'s active submodel (no
    /// download, no compile); `wait_us`: since the miss that asked for it.
    fn reuse_plan(&mut self, key: ObjectKey, id: u32, wait_us: u64) {
        let Some(model) = self.plans.get(&id).cloned() else {
            return;
        };
        self.insert(id, model);
        self.stats.plan_reuses += 1;
        self.events.swaps.push(SwapEvent {
            submodel: id,
            fetched: false,
            timings: SwapTimings::default(),
            bytes: 0,
            wait_us,
        });
        self.set_active(key, id);
    }

    /// The edge selected `id` for object `key`: make it active now if it is ready (cached, or
    /// a kept compiled plan), else ask the swap worker for it; it becomes active when it
    /// arrives.
    fn want(&mut self, key: ObjectKey, id: u32, asked: Instant) {
        if self.cache.contains(id) {
            self.cache.get_mut(id);
            self.set_active(key, id);
            return;
        }
        if self.plans.contains_key(&id) {
            self.reuse_plan(key, id, asked.elapsed().as_micros() as u64);
            return;
        }
        self.track(key).wanted = Some(id);
        if self.fetching.contains_key(&id) || self.prefetching == Some(id) {
            return; // on its way; it becomes active when it arrives
        }
        let Some(w) = self.swapper.as_mut() else {
            return;
        };
        match w.submit(id) {
            Ok(true) => {
                self.fetching.insert(id, asked);
            }
            Ok(false) => {} // the queue is full: the next miss asks again
            Err(e) => self.events.warnings.push(e),
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
                    self.events.warnings.push(warning);
                    self.fetching.clear();
                    break;
                }
            }
        }
        self.poll_prefetch();
        self.poll_audits();
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
                                self.want(key, o.response.submodel_id, asked);
                            }
                        }
                        Err(e) => self.edge_failed(e),
                    }
                }
                Ok(None) => {}
                Err(warning) => self.events.warnings.push(warning),
            }
        }
    }

    /// Take a finished prefetch, and ask for the next one while no swap the edge asked for is in
    /// flight (those never wait behind a prefetch: they run on their own worker).
    fn poll_prefetch(&mut self) {
        let Some(w) = self.prefetcher.as_mut() else {
            return;
        };
        match w.try_next() {
            Ok(Some((id, r))) => {
                self.prefetching = None;
                self.prefetched(id, r);
            }
            Ok(None) => {}
            Err(warning) => {
                self.prefetching = None;
                self.events.warnings.push(warning);
            }
        }
        if self.prefetching.is_some() || !self.fetching.is_empty() {
            return;
        }
        while let Some(id) = self.to_prefetch.pop_front() {
            if self.cache.contains(id) || self.plans.contains_key(&id) {
                continue;
            }
            let w = self.prefetcher.as_mut().expect("checked above");
            match w.submit(id) {
                Ok(true) => self.prefetching = Some(id),
                Ok(false) => self.to_prefetch.push_front(id),
                Err(e) => self.events.warnings.push(e),
            }
            break;
        }
    }

    /// The objects waiting for submodel `id`.
    fn wanting(&self, id: u32) -> Vec<ObjectKey> {
        self.tracks
            .iter()
            .filter(|(_, t)| t.wanted == Some(id))
            .map(|(k, _)| *k)
            .collect()
    }

    /// A prefetch ended: its compiled plan is kept (or, when an object wants the submodel by
    /// now, it becomes that object's active one, as a swap would); a failure is not reported
    /// (the swap the edge asks for later tries again, and warns).
    fn prefetched(&mut self, id: u32, r: Result<Fetched, String>) {
        let asked = Instant::now();
        let wanting = self.wanting(id);
        if let Ok(f) = r {
            self.stats.prefetches += 1;
            if f.model.is_some() && !wanting.is_empty() {
                self.fetched(id, Ok(f));
                return;
            }
            self.stats.bytes_down += f.traffic.down;
            if let Some(model) = f.model {
                self.note_plan(format!("submodel {id}"), &model);
                self.plans.insert(id, model);
            }
        }
        // Stored only, or failed: a swap the edge asked for meanwhile goes the usual way.
        for key in wanting {
            self.want(key, id, asked);
        }
    }

    fn fetched(&mut self, id: u32, r: Result<Fetched, String>) {
        let asked = self.fetching.remove(&id);
        match r {
            Ok(f) => {
                self.failed_fetch.remove(&id);
                match (&f.store_error, self.store_failing) {
                    (Some(e), false) => {
                        self.events
                            .warnings
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
                self.events.swaps.push(SwapEvent {
                    submodel: id,
                    fetched: true,
                    timings: f.timings,
                    bytes: f.traffic.down,
                    wait_us,
                });
                let wanting = self.wanting(id);
                let Some(model) = f.model else {
                    return; // a swap always compiles
                };
                self.note_plan(format!("submodel {id}"), &model);
                if wanting.is_empty() {
                    // The edge has selected another submodel since: keep the compiled plan
                    // for later, but do not evict a cached submodel for it.
                    if self.config.keep_compiled {
                        self.plans.insert(id, model);
                    }
                    return;
                }
                self.insert(id, model);
                for k in wanting {
                    self.set_active(k, id);
                }
            }
            Err(e) => {
                for t in self.tracks.values_mut() {
                    if t.wanted == Some(id) {
                        t.wanted = None;
                    }
                }
                self.stats.offload_failures += 1;
                if self.failed_fetch.insert(id) {
                    self.events.warnings.push(e);
                }
            }
        }
    }

    fn account(&mut self, o: &InferOutcome) {
        self.stats.bytes_up += o.traffic.up;
        self.stats.bytes_down += o.traffic.down;
        self.stats.edge_time_us += o.took.as_micros() as u64;
        self.call.model_us += o.took.as_micros() as u64;
    }

    /// A request for the classification in progress went to the edge.
    fn offloaded(&mut self) {
        self.stats.offloads += 1;
        self.call.offloaded = true;
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
                self.events.errors.push(format!(
                    "the edge server refused the token property ({e}); frames are classified \
                     on the device only until the element restarts with a token the edge accepts"
                ));
            }
            return;
        }
        let first = !self.backoff.blocked() && self.backoff.delay.is_zero();
        self.backoff.fail();
        if first {
            self.events
                .warnings
                .push(format!("edge offload failed (retrying with back-off): {e}"));
        }
    }

    fn edge_ok(&mut self) {
        if !self.backoff.delay.is_zero() {
            self.events.recovered = true;
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
        for t in &mut self.tensors {
            t.fill(0.0);
        }
        self.fresh.fill(false);
        let t = Instant::now();
        let r = match self.config.mode {
            Mode::Device => self
                .full
                .as_ref()
                .map(|f| f.run_into(&self.tensors[self.full_input], &mut self.logits)),
            _ => match self.active() {
                Some(a) => {
                    let i = self.submodel_input(a);
                    self.cache
                        .get_mut(a)
                        .map(|m| m.run_into(&self.tensors[i], &mut self.logits))
                }
                None => None,
            },
        };
        let took = t.elapsed();
        if let Some(Err(e)) = r {
            self.events.warnings.push(format!("warm-up run: {e}"));
        }
        took
    }

    /// Classify one object's pixels with the object's own active submodel; `px` gives them at
    /// each input a model of the set needs. `may_offload`: whether a miss may go to the edge
    /// (false once the frame's offload budget is spent: the local result comes back marked
    /// `deferred`).
    pub fn process_object(
        &mut self,
        key: ObjectKey,
        px: &mut dyn Pixels,
        may_offload: bool,
    ) -> Outcome {
        self.call = Call::default();
        self.fresh.fill(false);
        self.track(key);
        let result = self.classify(key, px, may_offload);
        let frame = self.frame;
        let t = self.track(key);
        t.last_seen = frame;
        t.since = 0;
        t.last = Some(result.clone());
        let call = std::mem::take(&mut self.call);
        Outcome {
            result,
            offloaded: call.offloaded,
            model_us: call.model_us,
        }
    }

    fn classify(&mut self, key: ObjectKey, px: &mut dyn Pixels, may_offload: bool) -> FrameResult {
        self.stats.frames += 1;
        match self.config.mode {
            Mode::Device => {
                let i = self.full_input;
                self.prepare(px, i);
                let t = Instant::now();
                let full = self.full.as_ref().expect("checked in new()");
                let r = full.run_into(&self.tensors[i], &mut self.logits);
                self.spent(t);
                match r {
                    Ok(()) => {
                        let c = Classification::from_logits(&self.logits);
                        self.result(&c, Source::Device, false, None)
                    }
                    Err(e) => {
                        self.events.warnings.push(format!("full model: {e}"));
                        self.none_result()
                    }
                }
            }
            Mode::Edge => {
                self.stats.misses += 1;
                if !may_offload {
                    return self.deferred(None);
                }
                self.offload_sync(key, px, None)
            }
            Mode::CacheNet => {
                self.poll();
                self.process_cachenet(key, px, may_offload)
            }
            Mode::SubmodelOnly => {
                let active = self.tracks[&key].active.expect("checked in new()");
                match self.run_cached(active, px) {
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

    /// The first kept compiled plan outside the cache (lowest id first) that is confident on
    /// the object's pixels, with its classification.
    fn search_kept(&mut self, px: &mut dyn Pixels) -> Option<(u32, Classification)> {
        let mut ids: Vec<u32> = self
            .plans
            .keys()
            .copied()
            .filter(|id| !self.cache.contains(*id))
            .collect();
        ids.sort_unstable();
        for id in ids {
            let i = self.submodel_input(id);
            self.prepare(px, i);
            let t = Instant::now();
            let r = self.plans[&id].run_into(&self.tensors[i], &mut self.logits);
            self.spent(t);
            match r {
                Ok(()) => {
                    let c = Classification::from_logits(&self.logits);
                    if c.is_hit(self.auditor.threshold(id)) {
                        return Some((id, c));
                    }
                }
                Err(e) => self.events.warnings.push(format!("submodel {id}: {e}")),
            }
        }
        None
    }

    /// A hit of submodel `id` (mode cachenet): counted, and perhaps audited.
    fn hit(
        &mut self,
        key: ObjectKey,
        px: &mut dyn Pixels,
        c: &Classification,
        id: u32,
    ) -> FrameResult {
        self.stats.hits += 1;
        self.maybe_audit(key, px, id, c.class_id as i32);
        self.result(c, Source::Device, true, Some(id))
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

    fn process_cachenet(
        &mut self,
        key: ObjectKey,
        px: &mut dyn Pixels,
        may_offload: bool,
    ) -> FrameResult {
        let active = self.tracks[&key].active;
        let mut local: Option<FrameResult> = None;
        if let Some(a) = active
            && let Some(c) = self.run_cached(a, px)
        {
            if c.is_hit(self.auditor.threshold(a)) {
                return self.hit(key, px, &c, a);
            }
            local = Some(self.result(&c, Source::Device, false, Some(a)));
        }
        for id in self.cache.ids_mru() {
            if Some(id) == active {
                continue;
            }
            if let Some(c) = self.run_cached(id, px) {
                if c.is_hit(self.auditor.threshold(id)) {
                    self.set_active(key, id);
                    return self.hit(key, px, &c, id);
                }
                if local.is_none() {
                    local = Some(self.result(&c, Source::Device, false, Some(id)));
                }
            }
        }
        // offload=async answers a miss locally until the edge's answer comes: before giving the
        // answer of a submodel that missed, the compiled plans kept in memory (evicted or
        // prefetched ones) are tried; a confident one comes back into the cache.
        if self.config.offload == Offload::Async
            && let Some((id, c)) = self.search_kept(px)
        {
            self.reuse_plan(key, id, 0);
            return self.hit(key, px, &c, id);
        }
        self.stats.misses += 1;
        if self.offloader.is_none() {
            return local.unwrap_or_else(|| self.none_result());
        }
        if !may_offload {
            return self.deferred(local);
        }
        match self.config.offload {
            Offload::Sync => self.offload_sync(key, px, local),
            Offload::Async => {
                if self.offload_blocked() {
                    return Self::degraded(local, self.none_result());
                }
                // One request in flight at most, and none while the submodel the edge
                // selected is on its way (the answer would select it again).
                if !self.offload_in_flight() && !self.swap_in_flight() {
                    let rid = self.next_request_id();
                    let job = InferJob {
                        hwc: px.at(self.full_input).to_vec(),
                        cached: self.cache.ids_mru(),
                        request_id: rid.clone(),
                        audited: None,
                    };
                    let w = self.offloader.as_mut().expect("checked above");
                    match w.submit(job) {
                        Ok(true) => {
                            self.offloaded();
                            self.asked_by.insert(rid, key);
                        }
                        Ok(false) => {}
                        Err(e) => self.events.warnings.push(e),
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
    fn offload_sync(
        &mut self,
        key: ObjectKey,
        px: &mut dyn Pixels,
        local: Option<FrameResult>,
    ) -> FrameResult {
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
            hwc: px.at(self.full_input).to_vec(),
            cached,
            request_id: rid.clone(),
            audited: None,
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
        self.offloaded();
        let outcome = match answer {
            Ok(Some(r)) => r,
            // A wait cut short by a flush: not an edge failure.
            Ok(None) if self.generation.current() != at => {
                return Self::degraded(local, self.none_result());
            }
            Ok(None) => Err(EdgeError::from("no answer within timeout-ms")),
            Err(warning) => {
                self.events.warnings.push(warning);
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
                self.want(key, id, asked);
                self.edge_result(&o, Some(id))
            }
            Err(e) => {
                self.edge_failed(e);
                Self::degraded(local, self.none_result())
            }
        }
    }
}
