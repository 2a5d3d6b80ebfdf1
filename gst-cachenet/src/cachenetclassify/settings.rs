//! The element's properties: their defaults, their specs (what `gst-inspect` shows) and the
//! settings they hold until `start()` reads them.

use std::sync::LazyLock;

use gst::glib;
use gst::prelude::*;

use super::{Backend, ExecutionProvider, Mode, Offload, Regions};
use crate::secret::Secret;

pub(super) const DEFAULT_MODE: Mode = Mode::CacheNet;
pub(super) const DEFAULT_OFFLOAD: Offload = Offload::Sync;
pub(super) const DEFAULT_THRESHOLD: f32 = -1.0;
pub(super) const DEFAULT_CACHE_SIZE: u32 = 1;
pub(super) const DEFAULT_TIMEOUT_MS: u32 = 1000;
pub(super) const DEFAULT_POST_MESSAGES: bool = true;
pub(super) const DEFAULT_KEEP_COMPILED: bool = true;
pub(super) const DEFAULT_PREFETCH: bool = true;
pub(super) const DEFAULT_REGIONS: Regions = Regions::Frame;
pub(super) const DEFAULT_MIN_SIZE: u32 = 16;
pub(super) const DEFAULT_MAX_OFFLOADS: u32 = 2;
pub(super) const DEFAULT_TRACK_TIMEOUT: u32 = 30;
pub(super) const DEFAULT_INTERVAL: u32 = 1;
pub(super) const DEFAULT_UNIQUE_ID: u32 = 0;
pub(super) const DEFAULT_SKIP_LATE: bool = true;
pub(super) const DEFAULT_MAX_PENDING_MESSAGES: u32 = 1000;
pub(super) const DEFAULT_BACKEND: Backend = Backend::Auto;
pub(super) const DEFAULT_EXECUTION_PROVIDER: ExecutionProvider = ExecutionProvider::Cpu;
pub(super) const DEFAULT_AUDIT_INTERVAL: u32 = 50;
pub(super) const DEFAULT_AUDIT_SEED: u64 = 0;
pub(super) const DEFAULT_TARGET_AGREEMENT: f64 = -1.0;

#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub(super) edge_url: Option<String>,
    pub(super) camera_id: Option<String>,
    pub(super) model_set: Option<String>,
    pub(super) model_dir: Option<String>,
    pub(super) mode: Mode,
    pub(super) threshold: f32,
    pub(super) cache_size: u32,
    pub(super) cache_dir: Option<String>,
    pub(super) offload: Offload,
    pub(super) timeout_ms: u32,
    pub(super) token: Option<Secret>,
    pub(super) ca_file: Option<String>,
    pub(super) manifest_sha256: Option<String>,
    pub(super) post_messages: bool,
    pub(super) max_pending_messages: u32,
    pub(super) keep_compiled: bool,
    pub(super) prefetch: bool,
    pub(super) regions: Regions,
    pub(super) roi_types: Option<String>,
    pub(super) min_size: u32,
    pub(super) max_offloads: u32,
    pub(super) track_timeout: u32,
    pub(super) interval: u32,
    pub(super) unique_id: u32,
    pub(super) skip_late: bool,
    pub(super) audit_interval: u32,
    pub(super) audit_seed: u64,
    pub(super) target_agreement: f64,
    pub(super) backend: Backend,
    pub(super) execution_provider: ExecutionProvider,
    pub(super) trt_cache_dir: Option<String>,
    pub(super) onnxruntime_library: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            edge_url: None,
            camera_id: None,
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
            prefetch: DEFAULT_PREFETCH,
            regions: DEFAULT_REGIONS,
            roi_types: None,
            min_size: DEFAULT_MIN_SIZE,
            max_offloads: DEFAULT_MAX_OFFLOADS,
            track_timeout: DEFAULT_TRACK_TIMEOUT,
            interval: DEFAULT_INTERVAL,
            unique_id: DEFAULT_UNIQUE_ID,
            skip_late: DEFAULT_SKIP_LATE,
            audit_interval: DEFAULT_AUDIT_INTERVAL,
            audit_seed: DEFAULT_AUDIT_SEED,
            target_agreement: DEFAULT_TARGET_AGREEMENT,
            backend: DEFAULT_BACKEND,
            execution_provider: DEFAULT_EXECUTION_PROVIDER,
            trt_cache_dir: None,
            onnxruntime_library: None,
        }
    }
}

/// The element's properties.
pub(super) fn properties() -> &'static [glib::ParamSpec] {
    static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
        vec![
            glib::ParamSpecString::builder("edge-url")
                .nick("Edge URL")
                .blurb("Base URL of the cachenet-edge server, e.g. http://edge:8470, or a comma-separated list of edges serving the same set: the camera prefers one by rendezvous hashing of camera-id, fails over to the next on a refused connection, a timeout or a 502/503/504, and returns once the preferred one answers /health/ready (probed every 5 s while away); an edge whose manifest differs is skipped with a warning (unset: no offloading)")
                .mutable_ready()
                .build(),
            glib::ParamSpecString::builder("camera-id")
                .nick("Camera id")
                .blurb("What orders the edge-url list for this camera (rendezvous hashing: cameras spread over the edges and keep theirs); default: the host name and the element name")
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
            glib::ParamSpecBoolean::builder("prefetch")
                .nick("Prefetch")
                .blurb("After start, fetch the manifest's other submodels from the edge in the background, one at a time and never ahead of a swap the edge asked for: kept in cache-dir while it has twice their size free, compiled when keep-compiled holds them (mode cachenet with edge-url)")
                .default_value(DEFAULT_PREFETCH)
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
            glib::ParamSpecUInt::builder("audit-interval")
                .nick("Audit interval")
                .blurb("mode=cachenet with edge-url: audit on average one hit in this many (drawn at random): the frame keeps its local result and its model input also goes to the edge in the background, to measure the submodel's agreement with the full model (cachenet-audit messages, stats); an audit never delays a frame and is dropped (counted in audits-dropped) while the offload path is busy; 0: no audits")
                .default_value(DEFAULT_AUDIT_INTERVAL)
                .mutable_ready()
                .build(),
            glib::ParamSpecUInt64::builder("audit-seed")
                .nick("Audit seed")
                .blurb("Seed of the audits' draws (the same seed draws the same hits); 0: from the clock")
                .default_value(DEFAULT_AUDIT_SEED)
                .mutable_ready()
                .build(),
            glib::ParamSpecDouble::builder("target-agreement")
                .nick("Target agreement")
                .blurb("Calibrate each submodel's threshold from its audits: 10 % lower (at most once per 20 audits) while the 95 % interval of its agreement with the full model lies below this target, 2 % higher per 50 agreeing audits while it lies above, never above the threshold at start nor below a quarter of it (one warning when agreement stays below the target there); e.g. 0.97; -1: thresholds stay as configured")
                .minimum(-1.0)
                .maximum(1.0)
                .default_value(DEFAULT_TARGET_AGREEMENT)
                .mutable_ready()
                .build(),
            glib::ParamSpecEnum::builder_with_default("backend", DEFAULT_BACKEND)
                .nick("Backend")
                .blurb("What runs the models: auto (the engine's own plan where it takes the graph, else tract; the plan and the reason a graph was refused are in stats and the log), direct, tract, or onnxruntime (only when asked; builds with the onnxruntime feature, the library found at run time: onnxruntime-library, else ORT_DYLIB_PATH, else the system's libonnxruntime.so)")
                .mutable_ready()
                .build(),
            glib::ParamSpecEnum::builder_with_default("execution-provider", DEFAULT_EXECUTION_PROVIDER)
                .nick("Execution provider")
                .blurb("backend=onnxruntime: cpu, cuda or tensorrt; a provider that cannot start falls back to the CPU with one warning naming why")
                .mutable_ready()
                .build(),
            glib::ParamSpecString::builder("trt-cache-dir")
                .nick("TensorRT cache directory")
                .blurb("execution-provider=tensorrt: keep TensorRT's engines here, so that only the first load of a model builds one")
                .mutable_ready()
                .build(),
            glib::ParamSpecString::builder("onnxruntime-library")
                .nick("onnxruntime library")
                .blurb("backend=onnxruntime: path of libonnxruntime.so (unset: ORT_DYLIB_PATH, else the system's); one library per process")
                .mutable_ready()
                .build(),
            glib::ParamSpecUInt::builder("swaps-pending")
                .nick("Swaps pending")
                .blurb("Submodels being fetched and compiled in the background; each becomes active at the next frame boundary after it is ready")
                .read_only()
                .build(),
            glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                .nick("Statistics")
                .blurb("Counters: frames (classifications: frames, or regions with regions=roi), hits, misses, offloads, offload-failures, swaps, evictions, bytes-up, bytes-down, device-time-us, edge-time-us, hit-rate, active-submodel, fetches, plan-reuses, prefetches, objects (tracked now), objects-dropped, deferred, reused, messages-dropped, and the swap phases' totals swap-{download,verify,store,parse,optimise,first-run,cpu,wait}-us (cpu: the device CPU time of the swaps' work, from verify to first run); plans (each loaded model's plan: backend, provider, why the own plan refused a graph); edge (the edge in use), edges (edge-url's edges in this camera's order of preference), failovers, edge-returns; audits: audits-sent, audits (answered), audit-agree, audits-dropped, audits-failed, threshold (in use for the active submodel) and submodels (a list of cachenet-agreement structures: submodel, audits, agree, window, agreement, agreement-low, agreement-high over its last 200 audits, 95 % Wilson interval, and threshold)")
                .read_only()
                .build(),
        ]
    });
    PROPERTIES.as_ref()
}

impl Settings {
    /// Set property `name` from `value` (type checked by GObject); false for a property that
    /// is not a setting.
    pub(super) fn set(&mut self, name: &str, value: &glib::Value) -> bool {
        let opt = |v: &glib::Value| {
            v.get::<Option<String>>()
                .expect("type checked upstream")
                .filter(|s| !s.is_empty())
        };
        match name {
            "edge-url" => self.edge_url = opt(value),
            "camera-id" => self.camera_id = opt(value),
            "model-set" => self.model_set = opt(value),
            "model-dir" => self.model_dir = opt(value),
            "mode" => self.mode = value.get().expect("type checked upstream"),
            "threshold" => self.threshold = value.get().expect("type checked upstream"),
            "cache-size" => self.cache_size = value.get().expect("type checked upstream"),
            "cache-dir" => self.cache_dir = opt(value),
            "offload" => self.offload = value.get().expect("type checked upstream"),
            "timeout-ms" => self.timeout_ms = value.get().expect("type checked upstream"),
            "token" => self.token = opt(value).map(Secret::new),
            "ca-file" => self.ca_file = opt(value),
            "manifest-sha256" => self.manifest_sha256 = opt(value),
            "post-messages" => self.post_messages = value.get().expect("type checked upstream"),
            "max-pending-messages" => {
                self.max_pending_messages = value.get().expect("type checked upstream")
            }
            "keep-compiled" => self.keep_compiled = value.get().expect("type checked upstream"),
            "prefetch" => self.prefetch = value.get().expect("type checked upstream"),
            "regions" => self.regions = value.get().expect("type checked upstream"),
            "roi-types" => self.roi_types = opt(value),
            "min-size" => self.min_size = value.get().expect("type checked upstream"),
            "max-offloads" => self.max_offloads = value.get().expect("type checked upstream"),
            "track-timeout" => self.track_timeout = value.get().expect("type checked upstream"),
            "interval" => self.interval = value.get().expect("type checked upstream"),
            "unique-id" => self.unique_id = value.get().expect("type checked upstream"),
            "skip-late" => self.skip_late = value.get().expect("type checked upstream"),
            "audit-interval" => self.audit_interval = value.get().expect("type checked upstream"),
            "audit-seed" => self.audit_seed = value.get().expect("type checked upstream"),
            "target-agreement" => {
                self.target_agreement = value.get().expect("type checked upstream")
            }
            "backend" => self.backend = value.get().expect("type checked upstream"),
            "execution-provider" => {
                self.execution_provider = value.get().expect("type checked upstream")
            }
            "trt-cache-dir" => self.trt_cache_dir = opt(value),
            "onnxruntime-library" => self.onnxruntime_library = opt(value),
            _ => return false,
        }
        true
    }

    /// The value of setting `name` (the write-only `token` is never read back); None for a
    /// property that is not a setting.
    pub(super) fn get(&self, name: &str) -> Option<glib::Value> {
        Some(match name {
            "edge-url" => self.edge_url.to_value(),
            "camera-id" => self.camera_id.to_value(),
            "model-set" => self.model_set.to_value(),
            "model-dir" => self.model_dir.to_value(),
            "mode" => self.mode.to_value(),
            "threshold" => self.threshold.to_value(),
            "cache-size" => self.cache_size.to_value(),
            "cache-dir" => self.cache_dir.to_value(),
            "offload" => self.offload.to_value(),
            "timeout-ms" => self.timeout_ms.to_value(),
            "ca-file" => self.ca_file.to_value(),
            "manifest-sha256" => self.manifest_sha256.to_value(),
            "post-messages" => self.post_messages.to_value(),
            "max-pending-messages" => self.max_pending_messages.to_value(),
            "keep-compiled" => self.keep_compiled.to_value(),
            "prefetch" => self.prefetch.to_value(),
            "regions" => self.regions.to_value(),
            "roi-types" => self.roi_types.to_value(),
            "min-size" => self.min_size.to_value(),
            "max-offloads" => self.max_offloads.to_value(),
            "track-timeout" => self.track_timeout.to_value(),
            "interval" => self.interval.to_value(),
            "unique-id" => self.unique_id.to_value(),
            "skip-late" => self.skip_late.to_value(),
            "audit-interval" => self.audit_interval.to_value(),
            "audit-seed" => self.audit_seed.to_value(),
            "target-agreement" => self.target_agreement.to_value(),
            "backend" => self.backend.to_value(),
            "execution-provider" => self.execution_provider.to_value(),
            "trt-cache-dir" => self.trt_cache_dir.to_value(),
            "onnxruntime-library" => self.onnxruntime_library.to_value(),
            _ => return None,
        })
    }
}
