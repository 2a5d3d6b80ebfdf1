//! `cachenetclassify` implementation: properties, state built in `start()`, per-frame work in
//! `transform_ip()`. The CacheNet logic itself lives in [`crate::runtime`].

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use cachenet_core::manifest::{Manifest, ModelFile};
use cachenet_core::modelset::{load_classifier, load_local};
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::subclass::prelude::*;
use gst_video::prelude::*;

use super::{Mode, Offload, Regions};
use crate::edge::EdgeClient;
use crate::frame::{FORMATS, Scaler, buffer_planes, crop_rect};
use crate::objects::{Associator, Filter, Region};
use crate::outbox::{Admit, Outbox};
use crate::result::{RESULT_MESSAGE, RESULT_STRUCTURE, ROI_TYPE};
use crate::runtime::{self, FRAME_OBJECT, FrameResult, ObjectKey, Runtime, Stats, SwapEvent};
use crate::secret::Secret;
use crate::store::Store;
use crate::worker::Generation;
use crate::worker::SwapTimings;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "cachenetclassify",
        gst::DebugColorFlags::empty(),
        Some("CacheNet classifier"),
    )
});

const DEFAULT_MODE: Mode = Mode::CacheNet;
const DEFAULT_OFFLOAD: Offload = Offload::Sync;
const DEFAULT_THRESHOLD: f32 = -1.0;
const DEFAULT_CACHE_SIZE: u32 = 1;
const DEFAULT_TIMEOUT_MS: u32 = 1000;
const DEFAULT_POST_MESSAGES: bool = true;
const DEFAULT_KEEP_COMPILED: bool = true;
const DEFAULT_REGIONS: Regions = Regions::Frame;
const DEFAULT_MIN_SIZE: u32 = 16;
const DEFAULT_MAX_OFFLOADS: u32 = 2;
const DEFAULT_TRACK_TIMEOUT: u32 = 30;
const DEFAULT_INTERVAL: u32 = 1;
const DEFAULT_UNIQUE_ID: u32 = 0;
const DEFAULT_SKIP_LATE: bool = true;
const DEFAULT_MAX_PENDING_MESSAGES: u32 = 1000;
/// Crop sizes whose scalers are kept (regions=roi).
const SCALERS_KEPT: usize = 64;

#[derive(Debug, Clone)]
struct Settings {
    edge_url: Option<String>,
    model_set: Option<String>,
    model_dir: Option<String>,
    mode: Mode,
    threshold: f32,
    cache_size: u32,
    cache_dir: Option<String>,
    offload: Offload,
    timeout_ms: u32,
    token: Option<Secret>,
    ca_file: Option<String>,
    manifest_sha256: Option<String>,
    post_messages: bool,
    max_pending_messages: u32,
    keep_compiled: bool,
    regions: Regions,
    roi_types: Option<String>,
    min_size: u32,
    max_offloads: u32,
    track_timeout: u32,
    interval: u32,
    unique_id: u32,
    skip_late: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            edge_url: None,
            model_set: None,
            model_dir: None,
            mode: DEFAULT_MODE,
            threshold: DEFAULT_THRESHOLD,
            cache_size: DEFAULT_CACHE_SIZE,
            cache_dir: None,
            offload: DEFAULT_OFFLOAD,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            token: None,
            ca_file: None,
            manifest_sha256: None,
            post_messages: DEFAULT_POST_MESSAGES,
            max_pending_messages: DEFAULT_MAX_PENDING_MESSAGES,
            keep_compiled: DEFAULT_KEEP_COMPILED,
            regions: DEFAULT_REGIONS,
            roi_types: None,
            min_size: DEFAULT_MIN_SIZE,
            max_offloads: DEFAULT_MAX_OFFLOADS,
            track_timeout: DEFAULT_TRACK_TIMEOUT,
            interval: DEFAULT_INTERVAL,
            unique_id: DEFAULT_UNIQUE_ID,
            skip_late: DEFAULT_SKIP_LATE,
        }
    }
}

struct State {
    runtime: Runtime,
    video: Option<(gst_video::VideoInfo, Scaler)>,
    hwc: Vec<u8>,
    frame: u64,
    regions: Regions,
    filter: Filter,
    max_offloads: u32,
    unique_id: u32,
    skip_late: bool,
    /// Scalers of region crops, by crop size (regions=roi).
    scalers: HashMap<(usize, usize), Scaler>,
    associator: Associator,
    latency: LatencyMeter,
    outbox: Outbox,
}

/// The element's added latency: what the latency query answers (a first estimate from one
/// model run at start, then the 95th percentile of the last frames' processing times), and
/// when to tell the pipeline that it grew.
#[derive(Default)]
struct LatencyMeter {
    recent: VecDeque<u64>,
    /// Sorted copy of `recent`, reused.
    sorted: Vec<u64>,
    frames: u64,
    last_post: Option<Instant>,
}

impl LatencyMeter {
    const WINDOW: usize = 100;

    /// Record one frame's processing time; true when the reported latency should grow (the
    /// recent 95th percentile is a quarter and 1 ms above it; at most every 2 s).
    fn record(&mut self, took: Duration, reported: &AtomicU64) -> bool {
        if self.recent.len() == Self::WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(took.as_nanos() as u64);
        self.frames += 1;
        // The percentile every 10th frame, from 20 frames on.
        if self.recent.len() < 20
            || !self.frames.is_multiple_of(10)
            || self
                .last_post
                .is_some_and(|t| t.elapsed() < Duration::from_secs(2))
        {
            return false;
        }
        self.sorted.clear();
        self.sorted.extend(self.recent.iter().copied());
        self.sorted.sort_unstable();
        let p95 = self.sorted[self.sorted.len() * 95 / 100];
        let now = reported.load(Ordering::Relaxed);
        if p95 > now + now / 4 && p95 > now + 1_000_000 {
            reported.store(p95, Ordering::Relaxed);
            self.last_post = Some(Instant::now());
            return true;
        }
        false
    }
}

#[derive(Default)]
pub struct CacheNetClassify {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
    /// Snapshot for the `stats` property, readable without waiting on the streaming thread.
    stats: Mutex<Stats>,
    /// Flush generation: a flush-start moves it, which cancels waits and background work.
    generation: Generation,
    /// Running time up to which buffers are late (from downstream QoS events).
    qos_earliest: Mutex<Option<gst::ClockTime>>,
    /// The latency the element adds, in ns (answered to latency queries).
    latency_ns: AtomicU64,
    /// Messages not posted because `max-pending-messages` were waiting on the bus.
    messages_dropped: AtomicU64,
}

#[glib::object_subclass]
impl ObjectSubclass for CacheNetClassify {
    const NAME: &'static str = "GstCacheNetClassify";
    type Type = super::CacheNetClassify;
    type ParentType = gst_base::BaseTransform;
}

fn stats_structure(s: &Stats) -> gst::Structure {
    let b = gst::Structure::builder("cachenet-stats")
        .field("frames", s.frames)
        .field("hits", s.hits)
        .field("misses", s.misses)
        .field("offloads", s.offloads)
        .field("offload-failures", s.offload_failures)
        .field("swaps", s.swaps)
        .field("evictions", s.evictions)
        .field("bytes-up", s.bytes_up)
        .field("bytes-down", s.bytes_down)
        .field("device-time-us", s.device_time_us)
        .field("edge-time-us", s.edge_time_us)
        .field("hit-rate", s.hit_rate())
        .field("active-submodel", s.active_submodel)
        .field("fetches", s.fetches)
        .field("plan-reuses", s.plan_reuses)
        .field("objects", s.objects)
        .field("objects-dropped", s.objects_dropped)
        .field("deferred", s.deferred)
        .field("reused", s.reused);
    swap_fields(b, "swap-", &s.swap, s.swap_wait_us).build()
}

/// The swap phases (and the wait) as `{prefix}download-us`, ... fields.
fn swap_fields(
    b: gst::structure::Builder,
    prefix: &str,
    t: &SwapTimings,
    wait_us: u64,
) -> gst::structure::Builder {
    [
        ("download", t.download_us),
        ("verify", t.verify_us),
        ("store", t.store_us),
        ("parse", t.parse_us),
        ("optimise", t.optimise_us),
        ("first-run", t.first_run_us),
        ("cpu", t.cpu_us),
        ("wait", wait_us),
    ]
    .into_iter()
    .fold(b, |b, (name, v)| b.field(format!("{prefix}{name}-us"), v))
}

fn swap_message(e: &SwapEvent) -> gst::Structure {
    let b = gst::Structure::builder("cachenet-swap")
        .field("submodel", e.submodel)
        .field("fetched", e.fetched)
        .field("bytes", e.bytes);
    swap_fields(b, "", &e.timings, e.wait_us).build()
}

impl ObjectImpl for CacheNetClassify {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("edge-url")
                    .nick("Edge URL")
                    .blurb("Base URL of the cachenet-edge server, e.g. http://edge:8470 (unset: no offloading)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("model-set")
                    .nick("Model set")
                    .blurb("Name of the model set on the edge server (default: the name in model-dir's manifest)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("model-dir")
                    .nick("Model directory")
                    .blurb("Local model set (manifest.json + ONNX): initial submodel, and the full model for mode=device")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("mode", DEFAULT_MODE)
                    .nick("Mode")
                    .blurb("cachenet: cached submodel with offload on a miss; device: full model locally on every frame; edge: every frame offloaded; submodel-only: the cached submodel on every frame, never offloaded")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecFloat::builder("threshold")
                    .nick("Entropy threshold")
                    .blurb("A frame is a hit when the submodel's predictive entropy (nats) is below this; -1 takes the manifest's default")
                    .minimum(-1.0)
                    .maximum(100.0)
                    .default_value(DEFAULT_THRESHOLD)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("cache-size")
                    .nick("Cache size")
                    .blurb("Number of submodels cached on the device (least recently used evicted first)")
                    .minimum(1)
                    .maximum(256)
                    .default_value(DEFAULT_CACHE_SIZE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("cache-dir")
                    .nick("Cache directory")
                    .blurb("Directory where downloaded submodels persist by sha256 and are reused after a restart (unset: memory only)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("offload", DEFAULT_OFFLOAD)
                    .nick("Offload")
                    .blurb("sync: a missed frame waits for the edge (bounded by timeout-ms); async: it leaves at once with the local result and the edge's answer swaps the submodel later")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("timeout-ms")
                    .nick("Timeout")
                    .blurb("Longest wait for one edge request or submodel download, in milliseconds")
                    .minimum(1)
                    .maximum(600_000)
                    .default_value(DEFAULT_TIMEOUT_MS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("token")
                    .nick("Token")
                    .blurb("Bearer token sent to the edge server (write-only; use an https:// edge-url: over http:// to another host it travels in clear, and the element warns)")
                    .write_only()
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("manifest-sha256")
                    .nick("Manifest SHA-256")
                    .blurb("Pin the model set: the sha256 (hex) its manifest.json must have, wherever it comes from (model-dir, the edge, cache-dir); the manifest pins every model file by sha256 in turn")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("ca-file")
                    .nick("CA file")
                    .blurb("PEM file of the certificate authority that signed an https:// edge's certificate (a private CA); without it, Mozilla's root certificates")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("post-messages")
                    .nick("Post messages")
                    .blurb("Post a cachenet-result element message on the bus for every frame")
                    .default_value(DEFAULT_POST_MESSAGES)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("max-pending-messages")
                    .nick("Maximum pending messages")
                    .blurb("With post-messages: while this many of the element's messages wait on the bus unread, further ones are dropped (counted in stats messages-dropped, one warning per streak), so that a bus nobody reads cannot grow without bound; 0: no bound")
                    .default_value(DEFAULT_MAX_PENDING_MESSAGES)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("keep-compiled")
                    .nick("Keep compiled")
                    .blurb("Keep the compiled plans of evicted submodels in memory, so that an evicted submodel comes back without a download or a compile")
                    .default_value(DEFAULT_KEEP_COMPILED)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("regions", DEFAULT_REGIONS)
                    .nick("Regions")
                    .blurb("frame: classify whole frames; roi: classify every region of interest (GstVideoRegionOfInterestMeta) an upstream detector attached, each region a tracked object with its own active submodel, its result a param structure on its ROI meta")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("roi-types")
                    .nick("ROI types")
                    .blurb("regions=roi: comma-separated ROI types (labels, e.g. \"face,person\") to classify; unset: every type")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("min-size")
                    .nick("Minimum size")
                    .blurb("regions=roi: smallest region classified, in pixels (width and height)")
                    .default_value(DEFAULT_MIN_SIZE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("max-offloads")
                    .nick("Maximum offloads per frame")
                    .blurb("Most misses of one frame sent to the edge (regions=roi: the other missed regions keep their local result, marked deferred); 0: none")
                    .default_value(DEFAULT_MAX_OFFLOADS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("track-timeout")
                    .nick("Track timeout")
                    .blurb("Forget an object (its active submodel and last result) after this many frames without it")
                    .minimum(1)
                    .default_value(DEFAULT_TRACK_TIMEOUT)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("interval")
                    .nick("Interval")
                    .blurb("Run a model on every interval-th frame of each object (the frame, or a region); in between its last result is attached again, marked reused")
                    .minimum(1)
                    .default_value(DEFAULT_INTERVAL)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("unique-id")
                    .nick("Unique id")
                    .blurb("Written into every result (unique-id field) to tell apart the results of several cachenetclassify instances in one pipeline")
                    .default_value(DEFAULT_UNIQUE_ID)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("skip-late")
                    .nick("Skip late frames")
                    .blurb("When downstream reports lateness (QoS), frames already late run no model: each object's last result is attached again, marked reused (the frames themselves are kept)")
                    .default_value(DEFAULT_SKIP_LATE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("swaps-pending")
                    .nick("Swaps pending")
                    .blurb("Submodels being fetched and compiled in the background; each becomes active at the next frame boundary after it is ready")
                    .read_only()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb("Counters: frames (classifications: frames, or regions with regions=roi), hits, misses, offloads, offload-failures, swaps, evictions, bytes-up, bytes-down, device-time-us, edge-time-us, hit-rate, active-submodel, fetches, plan-reuses, objects (tracked now), objects-dropped, deferred, reused, messages-dropped, and the swap phases' totals swap-{download,verify,store,parse,optimise,first-run,cpu,wait}-us (cpu: the device CPU time of the swaps' work, from verify to first run)")
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = self.settings.lock().unwrap();
        let opt = |v: &glib::Value| {
            v.get::<Option<String>>()
                .expect("type checked upstream")
                .filter(|s| !s.is_empty())
        };
        match pspec.name() {
            "edge-url" => s.edge_url = opt(value),
            "model-set" => s.model_set = opt(value),
            "model-dir" => s.model_dir = opt(value),
            "mode" => s.mode = value.get().expect("type checked upstream"),
            "threshold" => s.threshold = value.get().expect("type checked upstream"),
            "cache-size" => s.cache_size = value.get().expect("type checked upstream"),
            "cache-dir" => s.cache_dir = opt(value),
            "offload" => s.offload = value.get().expect("type checked upstream"),
            "timeout-ms" => s.timeout_ms = value.get().expect("type checked upstream"),
            "token" => s.token = opt(value).map(Secret::new),
            "ca-file" => s.ca_file = opt(value),
            "manifest-sha256" => s.manifest_sha256 = opt(value),
            "post-messages" => s.post_messages = value.get().expect("type checked upstream"),
            "max-pending-messages" => {
                s.max_pending_messages = value.get().expect("type checked upstream")
            }
            "keep-compiled" => s.keep_compiled = value.get().expect("type checked upstream"),
            "regions" => s.regions = value.get().expect("type checked upstream"),
            "roi-types" => s.roi_types = opt(value),
            "min-size" => s.min_size = value.get().expect("type checked upstream"),
            "max-offloads" => s.max_offloads = value.get().expect("type checked upstream"),
            "track-timeout" => s.track_timeout = value.get().expect("type checked upstream"),
            "interval" => s.interval = value.get().expect("type checked upstream"),
            "unique-id" => s.unique_id = value.get().expect("type checked upstream"),
            "skip-late" => s.skip_late = value.get().expect("type checked upstream"),
            other => gst::warning!(CAT, imp = self, "unknown property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = self.settings.lock().unwrap();
        match pspec.name() {
            "edge-url" => s.edge_url.to_value(),
            "model-set" => s.model_set.to_value(),
            "model-dir" => s.model_dir.to_value(),
            "mode" => s.mode.to_value(),
            "threshold" => s.threshold.to_value(),
            "cache-size" => s.cache_size.to_value(),
            "cache-dir" => s.cache_dir.to_value(),
            "offload" => s.offload.to_value(),
            "timeout-ms" => s.timeout_ms.to_value(),
            "ca-file" => s.ca_file.to_value(),
            "manifest-sha256" => s.manifest_sha256.to_value(),
            "post-messages" => s.post_messages.to_value(),
            "max-pending-messages" => s.max_pending_messages.to_value(),
            "keep-compiled" => s.keep_compiled.to_value(),
            "regions" => s.regions.to_value(),
            "roi-types" => s.roi_types.to_value(),
            "min-size" => s.min_size.to_value(),
            "max-offloads" => s.max_offloads.to_value(),
            "track-timeout" => s.track_timeout.to_value(),
            "interval" => s.interval.to_value(),
            "unique-id" => s.unique_id.to_value(),
            "skip-late" => s.skip_late.to_value(),
            "swaps-pending" => (self.generation.swaps_pending() as u32).to_value(),
            "stats" => {
                let mut st = stats_structure(&self.stats.lock().unwrap());
                st.set(
                    "messages-dropped",
                    self.messages_dropped.load(Ordering::Relaxed),
                );
                st.to_value()
            }
            _ => unreachable!("only registered properties are asked for"),
        }
    }
}

impl GstObjectImpl for CacheNetClassify {}

impl ElementImpl for CacheNetClassify {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "CacheNet classifier",
                "Filter/Analyzer/Video",
                "Classifies frames with a cached specialised ONNX submodel and offloads \
                 uncertain frames to a CacheNet edge server, which also sends the submodel to cache",
                "CacheNet developers <cachenet@example.org>",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = gst_video::VideoCapsBuilder::new()
                .format_list(FORMATS)
                .build();
            vec![
                gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &caps,
                )
                .expect("valid template"),
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &caps,
                )
                .expect("valid template"),
            ]
        });
        TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        // Before the pads are deactivated (which waits for the streaming thread): a sync wait
        // for the edge and the background work in flight are cancelled at once.
        if transition == gst::StateChange::PausedToReady {
            self.generation.bump();
        }
        self.parent_change_state(transition)
    }
}

fn settings_error(msg: impl std::fmt::Display) -> gst::ErrorMessage {
    gst::error_msg!(gst::ResourceError::Settings, ("{}", msg))
}

/// With a `manifest-sha256` pin, manifest bytes from `source` must hash to it.
fn check_pin(pin: Option<&str>, bytes: &[u8], source: &str) -> Result<(), String> {
    let Some(pin) = pin else { return Ok(()) };
    let got = cachenet_core::sha256_hex(bytes);
    if got.eq_ignore_ascii_case(pin) {
        Ok(())
    } else {
        Err(format!(
            "{source}: the manifest's sha256 is {got}, manifest-sha256 pins {pin}: refusing a \
             model set that is not the pinned one"
        ))
    }
}

impl CacheNetClassify {
    /// The manifest from the edge (saved to cache-dir), else the one cached in cache-dir;
    /// either must match the `manifest-sha256` pin when one is set.
    fn edge_manifest(
        &self,
        edge: &EdgeClient,
        store: Option<&Store>,
        pin: Option<&str>,
        set: &str,
    ) -> Result<Manifest, gst::ErrorMessage> {
        let err = match edge.manifest() {
            Ok((m, bytes)) => match check_pin(pin, &bytes, "edge-url") {
                Ok(()) => {
                    if let Some(Err(e)) = store.map(|st| st.save_manifest(&bytes)) {
                        gst::warning!(CAT, imp = self, "{e}");
                    }
                    return Ok(m);
                }
                Err(e) => e,
            },
            Err(e) => e.into(),
        };
        match store
            .and_then(Store::load_manifest)
            .filter(|(_, bytes)| check_pin(pin, bytes, "cache-dir").is_ok())
        {
            Some((m, _)) => {
                gst::element_imp_warning!(
                    self,
                    gst::ResourceError::Read,
                    ("edge-url: {err}; using the manifest cached in cache-dir")
                );
                Ok(m)
            }
            None => Err(settings_error(format!(
                "edge-url: cannot get the manifest of model set {set:?}: {err}"
            ))),
        }
    }

    fn build_state(&self, s: &Settings) -> Result<State, gst::ErrorMessage> {
        let timeout = Duration::from_millis(s.timeout_ms as u64);
        let pin = s.manifest_sha256.as_deref();
        if let Some(p) = pin
            && (p.len() != 64 || !p.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(settings_error(format!(
                "manifest-sha256 {p:?} is not a sha256 (64 hex digits)"
            )));
        }
        // The local model set: its manifest now, and later only the models this mode runs (the
        // full model in device mode, the first submodel in cachenet and submodel-only modes when
        // cache-dir has none): a camera needs no more of the set than that, on disk or in memory.
        let local = match &s.model_dir {
            Some(d) => {
                let (manifest, bytes) = Manifest::load_with_bytes(Path::new(d))
                    .map_err(|e| settings_error(format!("model-dir: {e}")))?;
                check_pin(pin, &bytes, "model-dir").map_err(settings_error)?;
                Some((Path::new(d), manifest))
            }
            None => None,
        };
        let load = |(dir, manifest): &(&Path, Manifest), entry: &ModelFile| {
            load_local(dir, manifest, entry).map_err(|e| settings_error(format!("model-dir: {e}")))
        };
        if local.is_none() && s.edge_url.is_none() {
            return Err(settings_error(
                "set model-dir (a local model set) or edge-url (an edge server), or both",
            ));
        }
        let set = match (&s.model_set, &local) {
            (Some(n), Some((_, l))) if *n != l.name => {
                return Err(settings_error(format!(
                    "model-set {n:?} does not match the set in model-dir ({:?})",
                    l.name
                )));
            }
            (Some(n), _) => n.clone(),
            (None, Some((_, l))) => l.name.clone(),
            (None, None) => {
                return Err(settings_error(
                    "model-set: name the model set to ask the edge for",
                ));
            }
        };
        let edge = match &s.edge_url {
            Some(u) => {
                let ca = s.ca_file.as_deref().map(Path::new);
                let client = EdgeClient::new(u, &set, s.token.clone(), timeout, ca)
                    .map_err(settings_error)?;
                if let Some(w) = client.clear_text_warning() {
                    gst::element_imp_warning!(self, gst::ResourceError::Settings, ("{}", w));
                }
                Some(client)
            }
            None => None,
        };
        let store = s.cache_dir.as_ref().map(|d| {
            let (store, why) = Store::open(Path::new(d), &set);
            if let Some(why) = why {
                gst::element_imp_warning!(self, gst::ResourceError::OpenWrite, ("{}", why));
            }
            store
        });
        let manifest = match (&local, &edge) {
            (Some((_, l)), _) => l.clone(),
            (None, Some(e)) => self.edge_manifest(e, store.as_ref(), pin, &set)?,
            (None, None) => unreachable!("checked above"),
        };
        // Warm start: submodels persisted in cache-dir (most recent first), else submodel 0
        // of the local model set.
        // Only the modes that run submodels load any (device and edge modes never run one).
        let runs_submodels = matches!(s.mode, Mode::CacheNet | Mode::SubmodelOnly);
        let cache_size = s.cache_size.max(1) as usize;
        let mut initial = Vec::new();
        if runs_submodels && let Some(st) = &store {
            for sha in st.recent() {
                if initial.len() == cache_size {
                    break;
                }
                let Some(spec) = manifest
                    .submodels
                    .iter()
                    .find(|m| m.sha256.eq_ignore_ascii_case(&sha))
                else {
                    continue;
                };
                if let Some(bytes) = st.load(&sha) {
                    match load_classifier(&manifest, &spec.file, &bytes) {
                        Ok(m) => initial.push((spec.id, m)),
                        Err(e) => gst::warning!(CAT, imp = self, "cache-dir: ignoring {sha}: {e}"),
                    }
                }
            }
        }
        if runs_submodels
            && initial.is_empty()
            && let Some(l @ (_, m)) = &local
            && let Some(spec) = m.submodels.first()
        {
            initial.push((spec.id, load(l, &spec.model_file())?));
        }
        let threshold = if s.threshold >= 0.0 {
            s.threshold
        } else {
            manifest.threshold
        };
        let config = runtime::Config {
            mode: s.mode,
            offload: s.offload,
            threshold,
            cache_size,
            keep_compiled: s.keep_compiled,
            timeout,
            interval: s.interval.max(1),
            track_timeout: s.track_timeout.max(1) as u64,
        };
        let full = match (&local, s.mode) {
            (Some(l @ (_, m)), Mode::Device) => Some(load(l, &m.full_model)?),
            _ => None,
        };
        let mut runtime = Runtime::new(
            manifest,
            config,
            full,
            initial,
            edge,
            store,
            self.generation.clone(),
        )
        .map_err(settings_error)?;
        gst::info!(
            CAT,
            imp = self,
            "model set {set}: threshold {threshold} nats, cache-size {cache_size}, cached {:?}",
            runtime.cached()
        );
        // First latency estimate: one model run (a sync miss may add up to timeout-ms more;
        // the measured processing times take over once frames flow).
        let first = runtime.warm_up();
        self.latency_ns
            .store(first.as_nanos() as u64, Ordering::Relaxed);
        Ok(State {
            runtime,
            video: None,
            hwc: Vec::new(),
            frame: 0,
            regions: s.regions,
            filter: Filter::new(s.roi_types.as_deref(), s.min_size),
            max_offloads: s.max_offloads,
            unique_id: s.unique_id,
            skip_late: s.skip_late,
            scalers: HashMap::new(),
            associator: Associator::new(s.track_timeout.max(1) as u64),
            outbox: Outbox::new(s.max_pending_messages as usize),
            latency: LatencyMeter::default(),
        })
    }
}

impl BaseTransformImpl for CacheNetClassify {
    const MODE: gst_base::subclass::BaseTransformMode =
        gst_base::subclass::BaseTransformMode::AlwaysInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = self.settings.lock().unwrap().clone();
        let state = self.build_state(&settings)?;
        self.messages_dropped.store(0, Ordering::Relaxed);
        *self.stats.lock().unwrap() = state.runtime.stats();
        *self.state.lock().unwrap() = Some(state);
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *self.state.lock().unwrap() = None;
        *self.qos_earliest.lock().unwrap() = None;
        Ok(())
    }

    fn query(&self, direction: gst::PadDirection, query: &mut gst::QueryRef) -> bool {
        let ok = BaseTransformImplExt::parent_query(self, direction, query);
        if ok
            && direction == gst::PadDirection::Src
            && let gst::QueryViewMut::Latency(q) = query.view_mut()
        {
            // The time one frame spends in this element (measured), added to upstream's.
            let (live, min, max) = q.result();
            let ours = gst::ClockTime::from_nseconds(self.latency_ns.load(Ordering::Relaxed));
            gst::debug!(CAT, imp = self, "adding {ours} of latency");
            q.set(live, min + ours, max.map(|m| m + ours));
        }
        ok
    }

    fn src_event(&self, event: gst::Event) -> bool {
        if let gst::EventView::Qos(q) = event.view() {
            // Buffers whose running time is not after timestamp + diff arrive late downstream.
            let (_, _, diff, timestamp) = q.get();
            *self.qos_earliest.lock().unwrap() = match timestamp {
                Some(t) if diff > 0 => Some(t + gst::ClockTime::from_nseconds(diff as u64)),
                _ => None,
            };
        }
        self.parent_src_event(event)
    }

    fn set_caps(&self, incaps: &gst::Caps, _outcaps: &gst::Caps) -> Result<(), gst::LoggableError> {
        let info = gst_video::VideoInfo::from_caps(incaps)
            .map_err(|_| gst::loggable_error!(CAT, "cannot parse caps {incaps}"))?;
        let mut guard = self.state.lock().unwrap();
        let state = guard
            .as_mut()
            .ok_or_else(|| gst::loggable_error!(CAT, "caps before start"))?;
        let spec = &state.runtime.manifest().input;
        let pre = crate::frame::scaler(
            &info,
            info.width() as usize,
            info.height() as usize,
            spec.width,
            spec.height,
            spec.color,
        )
        .map_err(|e| gst::loggable_error!(CAT, "{e}"))?;
        state.hwc = vec![0; pre.output_len()];
        state.video = Some((info, pre));
        // The region scalers were built for the previous caps (format, colorimetry).
        state.scalers.clear();
        Ok(())
    }

    fn transform_ip(&self, buf: &mut gst::BufferRef) -> Result<gst::FlowSuccess, gst::FlowError> {
        let started = Instant::now();
        let post = self.settings.lock().unwrap().post_messages;
        // The state leaves the lock while the frame is processed (a sync miss waits for the
        // edge): no lock is held across that wait. Only this streaming thread uses the state
        // between start() and stop().
        let mut state = self
            .state
            .lock()
            .unwrap()
            .take()
            .ok_or(gst::FlowError::Flushing)?;
        let late = self.is_late(buf);
        let out = self.process(&mut state, buf, post, started, late);
        state.runtime.end_frame();
        if state.latency.record(started.elapsed(), &self.latency_ns) {
            let _ = self
                .obj()
                .post_message(gst::message::Latency::builder().src(&*self.obj()).build());
        }
        *self.state.lock().unwrap() = Some(state);
        out
    }

    fn sink_event(&self, event: gst::Event) -> bool {
        match event.view() {
            // Out of band: cancels a sync wait and background work in flight.
            gst::EventView::FlushStart(_) => self.generation.bump(),
            // Serialized, on the streaming thread: nothing asked before the flush is pending.
            gst::EventView::FlushStop(_) => {
                *self.qos_earliest.lock().unwrap() = None;
                if let Some(st) = self.state.lock().unwrap().as_mut() {
                    st.runtime.flushed();
                    st.associator.reset();
                }
            }
            _ => {}
        }
        self.parent_sink_event(event)
    }
}

impl CacheNetClassify {
    /// Whether downstream's last QoS event says this buffer will be late.
    fn is_late(&self, buf: &gst::BufferRef) -> bool {
        let Some(earliest) = *self.qos_earliest.lock().unwrap() else {
            return false;
        };
        let segment = self.obj().segment();
        let Some(seg) = segment.downcast_ref::<gst::ClockTime>() else {
            return false;
        };
        buf.pts()
            .and_then(|pts| seg.to_running_time(pts))
            .is_some_and(|rt| rt <= earliest)
    }

    /// A buffer whose frame cannot be read (not readable, or smaller than its planes).
    fn map_error(&self, why: &str) -> gst::FlowError {
        gst::element_imp_error!(
            self,
            gst::StreamError::Format,
            ("cannot read the video frame: {}", why)
        );
        gst::FlowError::Error
    }

    fn process(
        &self,
        state: &mut State,
        buf: &mut gst::BufferRef,
        post: bool,
        started: Instant,
        late: bool,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        if state.video.is_none() {
            return Err(gst::FlowError::NotNegotiated);
        }
        let late = late && state.skip_late;
        let spent = |s: &Stats| s.device_time_us + s.edge_time_us;
        let spent_before = spent(&state.runtime.stats());
        let results = match state.regions {
            Regions::Frame => vec![(None, self.classify_frame(state, buf, late)?)],
            Regions::Roi => self.classify_regions(state, buf, late)?,
        };
        let stats = state.runtime.stats();
        let inference_us = spent(&stats).saturating_sub(spent_before);
        let warnings = state.runtime.take_warnings();
        let errors = state.runtime.take_errors();
        let swaps = state.runtime.take_swap_events();
        let recovered = state.runtime.take_recovered();
        let frame_no = state.frame;
        state.frame += 1;
        *self.stats.lock().unwrap() = stats;

        let pts = buf.pts();
        let (width, height) = {
            let (info, _) = state.video.as_ref().expect("checked above");
            (info.width(), info.height())
        };
        // Each result's fields are built once: the ROI param, the meta and the bus message
        // carry copies.
        let mut messages = Vec::new();
        let mut by_meta: HashMap<usize, gst::Structure> = HashMap::new();
        #[cfg(feature = "analytics")]
        let labels = &state.runtime.manifest().labels;
        for (region, result) in &results {
            let mut b =
                crate::result::fields(RESULT_STRUCTURE, result).field("unique-id", state.unique_id);
            if let Some((r, key)) = region {
                b = b
                    .field("object-id", *key)
                    .field("roi-type", r.roi_type.as_str());
            }
            let fields = b.build();
            match region {
                None => {
                    let mut roi = gst_video::VideoRegionOfInterestMeta::add(
                        buf,
                        ROI_TYPE,
                        (0, 0, width, height),
                    );
                    roi.add_param(fields.clone());
                    crate::meta::CacheNetMeta::add_structure(buf, fields.clone());
                    #[cfg(feature = "analytics")]
                    if let Err(e) = crate::analytics::attach(buf, result, labels) {
                        gst::warning!(
                            CAT,
                            imp = self,
                            "cannot add the analytics classification: {e}"
                        );
                    }
                    #[cfg(feature = "tensor-meta")]
                    crate::analytics::attach_tensor(buf, &result.probabilities);
                }
                #[cfg(feature = "analytics")]
                Some((r, _)) if r.detection.is_some() => {
                    let od = r.detection.expect("matched");
                    if let Err(e) = crate::analytics::attach_to_detection(buf, od, result, labels) {
                        gst::warning!(
                            CAT,
                            imp = self,
                            "cannot add the classification of detection {od}: {e}"
                        );
                    }
                }
                Some((r, _)) => {
                    by_meta.insert(r.index, fields.clone());
                }
            }
            if post {
                let mut s = fields;
                s.set_name(RESULT_MESSAGE);
                if let Some((r, _)) = region {
                    let (x, y, w, h) = r.rect;
                    s.set("x", x);
                    s.set("y", y);
                    s.set("width", w);
                    s.set("height", h);
                }
                messages.push(s);
            }
        }
        if !by_meta.is_empty() {
            for (i, mut m) in buf
                .iter_meta_mut::<gst_video::VideoRegionOfInterestMeta>()
                .enumerate()
            {
                if let Some(fields) = by_meta.remove(&i) {
                    m.add_param(fields);
                }
            }
        }
        gst::trace!(CAT, imp = self, "frame {frame_no}: {results:?}");
        for w in warnings {
            gst::element_imp_warning!(self, gst::ResourceError::Read, ("{}", w));
        }
        for e in errors {
            // A settings error for the application; frames keep flowing with local results.
            gst::element_imp_error!(self, gst::ResourceError::NotAuthorized, ("{}", e));
        }
        if recovered {
            gst::info!(CAT, imp = self, "edge server answers again");
        }
        if post {
            for e in &swaps {
                self.post_bounded(&mut state.outbox, swap_message(e));
            }
            let latency_us = started.elapsed().as_micros() as u64;
            for mut s in messages {
                s.set("latency-us", latency_us);
                s.set("inference-us", inference_us);
                s.set("pts", pts.map_or(u64::MAX, |p| p.nseconds()));
                s.set("frame", frame_no);
                self.post_bounded(&mut state.outbox, s);
            }
        }
        Ok(gst::FlowSuccess::Ok)
    }

    /// Post an element message unless `max-pending-messages` of ours wait unread on the bus.
    fn post_bounded(&self, outbox: &mut Outbox, s: gst::Structure) {
        let msg = gst::message::Element::builder(s).src(&*self.obj()).build();
        match outbox.admit(msg) {
            Admit::Post(m) => {
                let _ = self.obj().post_message(m);
            }
            Admit::Dropped { first } => {
                self.messages_dropped.fetch_add(1, Ordering::Relaxed);
                if first {
                    gst::element_imp_warning!(
                        self,
                        gst::ResourceError::NoSpaceLeft,
                        (
                            "{} messages of this element wait unread on the bus: dropping results \
                             messages until the application reads it (max-pending-messages)",
                            outbox.waiting()
                        )
                    );
                }
            }
        }
    }

    /// The whole frame as one object.
    fn classify_frame(
        &self,
        state: &mut State,
        buf: &gst::BufferRef,
        late: bool,
    ) -> Result<FrameResult, gst::FlowError> {
        if let Some(r) = state.runtime.reuse(FRAME_OBJECT, late) {
            return Ok(r);
        }
        let (info, pre) = state.video.as_mut().expect("negotiated");
        {
            let map = buf
                .map_readable()
                .map_err(|_| self.map_error("not readable"))?;
            let planes = buffer_planes(&map, buf, info).map_err(|e| self.map_error(&e))?;
            pre.run(&planes, &mut state.hwc);
        }
        Ok(state
            .runtime
            .process_object(FRAME_OBJECT, &state.hwc, state.max_offloads > 0))
    }

    /// Every region of interest of the frame that the filter accepts, each as its object:
    /// cropped and scaled straight from the mapped frame, at most `max-offloads` misses
    /// offloaded.
    #[allow(clippy::type_complexity)]
    fn classify_regions(
        &self,
        state: &mut State,
        buf: &gst::BufferRef,
        late: bool,
    ) -> Result<Vec<(Option<(Region, ObjectKey)>, FrameResult)>, gst::FlowError> {
        // With the analytics feature, the relation meta's object detections when there are any.
        #[cfg(feature = "analytics")]
        let detections: Vec<Region> = crate::analytics::detections(buf)
            .into_iter()
            .filter(|d| state.filter.accepts(&d.obj_type, d.rect.2, d.rect.3))
            .map(|d| Region {
                index: usize::MAX,
                detection: Some(d.mtd_id),
                roi_type: d.obj_type,
                id: d.tracking_id as i64,
                rect: d.rect,
            })
            .collect();
        #[cfg(not(feature = "analytics"))]
        let detections: Vec<Region> = Vec::new();
        let regions: Vec<Region> = if !detections.is_empty() {
            detections
        } else {
            buf.iter_meta::<gst_video::VideoRegionOfInterestMeta>()
                .enumerate()
                .filter_map(|(index, m)| {
                    let roi_type = m.roi_type();
                    let rect = m.rect();
                    (roi_type != ROI_TYPE && state.filter.accepts(roi_type, rect.2, rect.3)).then(
                        || Region {
                            index,
                            detection: None,
                            roi_type: roi_type.to_string(),
                            id: m.id() as i64,
                            rect,
                        },
                    )
                })
                .collect()
        };
        let keys = state.associator.assign(&regions);
        if regions.is_empty() {
            return Ok(Vec::new());
        }
        let (info, _) = state.video.as_ref().expect("negotiated");
        let spec = &state.runtime.manifest().input;
        let (out_w, out_h, color) = (spec.width, spec.height, spec.color);
        let map = buf
            .map_readable()
            .map_err(|_| self.map_error("not readable"))?;
        let planes = buffer_planes(&map, buf, info).map_err(|e| self.map_error(&e))?;
        let mut budget = state.max_offloads;
        let mut out = Vec::with_capacity(regions.len());
        for (region, key) in regions.into_iter().zip(keys) {
            if let Some(r) = state.runtime.reuse(key, late) {
                out.push((Some((region, key)), r));
                continue;
            }
            let Some(rect) = crop_rect(info.format(), region.rect, info.width(), info.height())
            else {
                continue; // wholly outside the frame
            };
            if state.scalers.len() >= SCALERS_KEPT && !state.scalers.contains_key(&(rect.w, rect.h))
            {
                state.scalers.clear();
            }
            let pre = match state.scalers.entry((rect.w, rect.h)) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert(
                    crate::frame::scaler(info, rect.w, rect.h, out_w, out_h, color).map_err(
                        |e| {
                            gst::element_imp_error!(self, gst::StreamError::Format, ("{}", e));
                            gst::FlowError::NotNegotiated
                        },
                    )?,
                ),
            };
            pre.run(&planes.crop(pre.layout(), rect), &mut state.hwc);
            let offloads = state.runtime.stats().offloads;
            let r = state.runtime.process_object(key, &state.hwc, budget > 0);
            if state.runtime.stats().offloads > offloads {
                budget = budget.saturating_sub(1);
            }
            out.push((Some((region, key)), r));
        }
        Ok(out)
    }
}
