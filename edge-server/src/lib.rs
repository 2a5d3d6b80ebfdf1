//! `cachenet-edge`: the CacheNet edge server as a library (`router`, `serve`) with a thin binary.
//!
//! It holds one or more model sets (full model, selector, submodels) and answers devices over
//! HTTP/1.1 with protobuf bodies; see the README for the API.

pub mod collect;
pub mod error;
mod infer;
pub mod listen;
pub mod metrics;
pub mod oip;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cachenet_core::manifest::is_safe_name;
use cachenet_core::modelset::{ModelSet, load_local_full};
use cachenet_core::proto;
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use error::ApiError;

use metrics::Metrics;

/// Time every request body gets, on top of [`BODY_MIN_RATE`].
const BODY_GRACE: std::time::Duration = std::time::Duration::from_secs(2);
/// Slowest accepted body upload (bytes per second): a 10 kB frame gets 2 s, a 16 MB one 18 s.
const BODY_MIN_RATE: u64 = 1 << 20;

/// How long a body of `len` bytes may take to arrive.
fn body_deadline(len: u64) -> std::time::Duration {
    BODY_GRACE + std::time::Duration::from_millis(len.saturating_mul(1000) / BODY_MIN_RATE)
}

/// How often the inference servers of `--full-model` are checked for `/health/ready`.
pub const UPSTREAM_CHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// Server settings (the binary's flags).
#[derive(Debug, Clone)]
pub struct Config {
    pub model_dirs: Vec<PathBuf>,
    /// Inference worker threads (frames computed at once).
    pub workers: usize,
    /// Frames allowed to wait for a worker; beyond that, 503.
    pub queue: usize,
    /// Bearer token required on `/v1/*` when set.
    pub token: Option<String>,
    pub max_body_bytes: usize,
    /// Request bodies being received at once; beyond that, 503. Uploads never hold an
    /// inference slot: a request joins the inference queue once its body has arrived.
    pub uploads: usize,
    /// Serve HTTPS with this certificate and key ([`listen::tls_config`]); None: plain HTTP.
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    /// Write the frames of misses and audits with the full model's answers (`--collect`).
    pub collect: Option<Arc<collect::Collector>>,
    /// What runs the full models and submodels (`--backend`, `--execution-provider`).
    pub engine: cachenet_core::engine::Engine,
    /// Full models on an inference server instead of in-process (`--full-model`).
    pub full_models: Vec<FullModelAt>,
    /// How the inference server is reached (`--full-model-*`).
    pub full_model_options: oip::Options,
}

/// `--full-model [SET=]oip+http://HOST:PORT/MODEL`: the full model of `set` (of the only set
/// when None) runs on that inference server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FullModelAt {
    pub set: Option<String>,
    pub url: String,
}

impl std::str::FromStr for FullModelAt {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (set, url) = match s.split_once('=') {
            Some((set, url)) if !set.contains("://") => (Some(set.to_string()), url),
            _ => (None, s),
        };
        oip::parse_url(url)?;
        Ok(FullModelAt {
            set,
            url: url.to_string(),
        })
    }
}

/// A model set as served: its full model in-process (`set.full`) or on an inference server.
#[derive(Debug)]
pub struct Served {
    pub set: ModelSet,
    pub remote_full: Option<oip::OipModel>,
}

impl std::ops::Deref for Served {
    type Target = ModelSet;
    fn deref(&self) -> &ModelSet {
        &self.set
    }
}

impl Default for Config {
    fn default() -> Self {
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        Config {
            model_dirs: Vec::new(),
            workers,
            queue: 4 * workers,
            token: None,
            max_body_bytes: 16 << 20,
            uploads: 64,
            tls: None,
            collect: None,
            engine: cachenet_core::engine::Engine::default(),
            full_models: Vec::new(),
            full_model_options: oip::Options::default(),
        }
    }
}

struct Inner {
    config: Config,
    sets: OnceLock<BTreeMap<String, Arc<Served>>>,
    ready: AtomicBool,
    /// Every inference server that runs a full model answered its model's readiness at the
    /// last check (true without one).
    upstream_ready: AtomicBool,
    /// Shutting down: readiness answers 503 so that balancers drain this edge.
    draining: AtomicBool,
    uploads: Arc<Semaphore>,
    admitted: Arc<Semaphore>,
    /// Capacities of `uploads` and `admitted` (for the gauges).
    slots: (usize, usize),
    workers: Arc<Semaphore>,
    metrics: Metrics,
}

/// Shared state of the server. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// Load and validate every model directory of `config` on its engine (blocking; sets are keyed
/// by manifest name). A full model on an inference server (`full_models`) is not loaded here:
/// the server's metadata is checked against the manifest instead. Each model's plan is logged
/// once (and a provider that could not start, as a warning).
pub fn load_model_sets(config: &Config) -> Result<BTreeMap<String, Arc<Served>>, String> {
    let (dirs, engine) = (&config.model_dirs, &config.engine);
    let mut sets = BTreeMap::new();
    let mut warned = false;
    let mut used = vec![false; config.full_models.len()];
    for dir in dirs {
        // The set without its full model first: its name says whether an inference server
        // runs the full model; else it is loaded here.
        let mut set = ModelSet::load_serving(dir, engine, false)
            .map_err(|e| format!("model set {}: {e}", dir.display()))?;
        let at = config.full_models.iter().position(|f| match &f.set {
            Some(s) => *s == set.manifest.name,
            None => dirs.len() == 1,
        });
        if at.is_none() {
            set.full = Some(
                load_local_full(dir, &set.manifest, engine)
                    .map_err(|e| format!("model set {}: {e}", dir.display()))?,
            );
        }
        let remote_full = match at {
            Some(i) => {
                used[i] = true;
                let m = oip::OipModel::connect(
                    &config.full_models[i].url,
                    set.manifest.full_input().shape(),
                    set.manifest.labels.len(),
                    &config.full_model_options,
                )
                .map_err(|e| format!("model set {}: {e}", set.name()))?;
                Some(m)
            }
            None => None,
        };
        let models = set
            .full
            .iter()
            .map(|f| ("full model".to_string(), f))
            .chain(
                set.submodels
                    .iter()
                    .map(|s| (format!("submodel {}", s.id), &s.model)),
            );
        for (what, m) in models {
            let load = m.plan().load;
            tracing::info!(
                set = set.name(),
                parse_ms = load.parse_us / 1000,
                build_ms = load.optimise_us / 1000,
                "plan of {what}: {}",
                m.plan()
            );
            if let Some(w) = &m.plan().warning
                && !std::mem::replace(&mut warned, true)
            {
                tracing::warn!(set = set.name(), "{what}: {w}");
            }
        }
        let name = set.name().to_string();
        if sets
            .insert(name.clone(), Arc::new(Served { set, remote_full }))
            .is_some()
        {
            return Err(format!("two model sets are named {name:?}"));
        }
    }
    if let Some(i) = used.iter().position(|u| !u) {
        let f = &config.full_models[i];
        return Err(match &f.set {
            Some(s) => format!("--full-model {s}={}: no model set is named {s:?}", f.url),
            None => format!(
                "--full-model {}: name its set (SET=oip+http://...) when serving several",
                f.url
            ),
        });
    }
    Ok(sets)
}

impl AppState {
    /// A state with no model set loaded yet (`/health/ready` answers 503 until
    /// [`AppState::set_models`]).
    pub fn new(config: Config) -> AppState {
        let workers = config.workers.max(1);
        let slots = (config.uploads.max(1), workers + config.queue);
        AppState(Arc::new(Inner {
            uploads: Arc::new(Semaphore::new(slots.0)),
            admitted: Arc::new(Semaphore::new(slots.1)),
            slots,
            workers: Arc::new(Semaphore::new(workers)),
            config,
            sets: OnceLock::new(),
            ready: AtomicBool::new(false),
            upstream_ready: AtomicBool::new(true),
            draining: AtomicBool::new(false),
            metrics: Metrics::default(),
        }))
    }

    /// Build a state and load its model sets now.
    pub fn load(config: Config) -> Result<AppState, String> {
        let sets = load_model_sets(&config)?;
        let state = AppState::new(config);
        state.set_models(sets);
        Ok(state)
    }

    pub fn set_models(&self, sets: BTreeMap<String, Arc<Served>>) {
        let watch = sets.values().any(|s| s.remote_full.is_some());
        let _ = self.0.sets.set(sets);
        self.0.ready.store(true, Ordering::Release);
        if watch {
            self.watch_upstream();
        }
    }

    /// Check the inference servers' readiness every [`UPSTREAM_CHECK`] on a thread of its own
    /// (ends with the state), so that `/health/ready` answers 503 while a full model cannot be
    /// reached and balancers send the cameras elsewhere.
    fn watch_upstream(&self) {
        let weak = Arc::downgrade(&self.0);
        let spawned = std::thread::Builder::new()
            .name("cachenet-upstream".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPSTREAM_CHECK);
                    let Some(inner) = weak.upgrade() else { return };
                    let Some(sets) = inner.sets.get() else {
                        continue;
                    };
                    let down: Vec<String> = sets
                        .values()
                        .filter_map(|s| s.remote_full.as_ref())
                        .filter(|m| !m.is_ready())
                        .map(|m| m.describe())
                        .collect();
                    let was = inner.upstream_ready.swap(down.is_empty(), Ordering::AcqRel);
                    if was && !down.is_empty() {
                        tracing::warn!(
                            "not ready: the full model's inference server does not answer ({})",
                            down.join(", ")
                        );
                    } else if !was && down.is_empty() {
                        tracing::info!("ready again: the inference servers answer");
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot watch the inference servers: {e}");
        }
    }

    /// Stop answering ready (`/health/ready` 503) ahead of a shutdown, so that balancers stop
    /// sending requests while in-flight ones finish.
    pub fn drain(&self) {
        self.0.draining.store(true, Ordering::Release);
    }

    /// Model sets loaded, every inference server ready, not draining.
    pub fn is_ready(&self) -> bool {
        self.0.ready.load(Ordering::Acquire)
            && self.0.upstream_ready.load(Ordering::Acquire)
            && !self.0.draining.load(Ordering::Acquire)
    }

    pub fn config(&self) -> &Config {
        &self.0.config
    }

    /// Request bodies being received, and inference requests admitted (computing or queued).
    fn gauges(&self) -> [(&'static str, &'static str, usize); 2] {
        let (uploads, admitted) = self.0.slots;
        let used = |s: &Semaphore, n: usize| n.saturating_sub(s.available_permits());
        [
            (
                "cachenet_uploads_in_progress",
                "Request bodies being received.",
                used(&self.0.uploads, uploads),
            ),
            (
                "cachenet_inferences_admitted",
                "Inference requests computing or waiting for a worker.",
                used(&self.0.admitted, admitted),
            ),
        ]
    }

    fn set(&self, name: &str) -> Result<Arc<Served>, ApiError> {
        let sets = self
            .0
            .sets
            .get()
            .ok_or_else(|| ApiError::NotReady("model sets are still loading".into()))?;
        sets.get(name)
            .cloned()
            .ok_or_else(|| ApiError::NotFound(format!("no model set named {name:?}")))
    }
}

/// Answer one `InferRequest` body for `set` as `POST /v1/models/{set}/infer` does (decode,
/// checks, image decoding, full model and selector), without HTTP: for embedding and fuzzing.
pub fn infer_request(set: &ModelSet, body: &[u8]) -> Result<proto::InferResponse, ApiError> {
    infer::infer(set, None, body, false).map(|a| a.response)
}

/// The HTTP routes.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/models/{set}/manifest", get(manifest))
        .route("/v1/models/{set}/submodels/{id}", get(submodel))
        .route("/v1/models/{set}/infer", post(infer_handler))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/health/live", get(|| async { "live\n" }))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics_handler))
        .merge(api)
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .layer(DefaultBodyLimit::max(state.0.config.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Serve until `shutdown` resolves; in-flight requests are finished first. HTTPS when the
/// config has a TLS certificate; either way a connection that sends nothing for
/// [`listen::IDLE`] is closed.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state.clone());
    match state.config().tls.clone() {
        Some(tls) => {
            axum::serve(listen::Tls::new(listener, tls)?, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
        None => {
            axum::serve(listen::Plain(listener), app)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
}

async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let bytes_in = content_length(req.headers());
    let resp = next.run(req).await;
    let bytes_out = axum::body::HttpBody::size_hint(resp.body())
        .exact()
        .unwrap_or(0);
    state
        .0
        .metrics
        .request(&route, resp.status().as_u16(), bytes_in, bytes_out);
    resp
}

fn content_length(h: &HeaderMap) -> u64 {
    h.get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(token) = &state.0.config.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            None => {
                return ApiError::Unauthorized("missing bearer token".into()).into_response();
            }
            Some(g) if !constant_time_eq(g.trim().as_bytes(), token.as_bytes()) => {
                return ApiError::Unauthorized("wrong bearer token".into()).into_response();
            }
            Some(_) => {}
        }
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn ready(State(state): State<AppState>) -> Response {
    let i = &state.0;
    if state.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else if i.draining.load(Ordering::Acquire) {
        ApiError::NotReady("shutting down".into()).into_response()
    } else if !i.ready.load(Ordering::Acquire) {
        ApiError::NotReady("model sets are still loading".into()).into_response()
    } else {
        ApiError::NotReady("the full model's inference server is not ready".into()).into_response()
    }
}

async fn metrics_handler(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.0.metrics.render(&state.gauges()),
    )
        .into_response()
}

fn json(value: serde_json::Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec_pretty(&value).unwrap_or_default(),
    )
        .into_response()
}

async fn list_models(State(state): State<AppState>) -> Result<Response, ApiError> {
    let sets = state
        .0
        .sets
        .get()
        .ok_or_else(|| ApiError::NotReady("model sets are still loading".into()))?;
    let list: Vec<serde_json::Value> = sets
        .values()
        .map(|s| {
            let m = &s.manifest;
            serde_json::json!({
                "name": m.name, "version": m.version, "k": m.selector.k,
                "labels": m.labels, "input": m.full_input(), "threshold": m.threshold,
            })
        })
        .collect();
    Ok(json(serde_json::json!({ "models": list })))
}

fn checked_set_name(name: &str) -> Result<&str, ApiError> {
    if is_safe_name(name) {
        Ok(name)
    } else {
        Err(ApiError::BadRequest(format!(
            "invalid model set name {name:?}"
        )))
    }
}

async fn manifest(
    State(state): State<AppState>,
    Path(set): Path<String>,
) -> Result<Response, ApiError> {
    let set = state.set(checked_set_name(&set)?)?;
    // The file's own bytes: a device pins their sha256 (`manifest-sha256`).
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        set.manifest_bytes.clone(),
    )
        .into_response())
}

async fn submodel(
    State(state): State<AppState>,
    Path((set, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let set = state.set(checked_set_name(&set)?)?;
    let id: u32 = id
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("submodel id {id:?} is not a number")))?;
    let sm = set.submodel(id).ok_or_else(|| {
        ApiError::NotFound(format!(
            "model set {:?} has no submodel {id} (K = {})",
            set.name(),
            set.submodels.len()
        ))
    })?;
    let etag = format!("\"{}\"", sm.sha256);
    let etag_value = HeaderValue::from_str(&etag).map_err(|e| ApiError::Internal(e.to_string()))?;
    if let Some(inm) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        && inm.split(',').any(|t| t.trim() == etag || t.trim() == "*")
    {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag_value)]).into_response());
    }
    let body = proto::Submodel {
        id,
        sha256: sm.sha256.clone(),
        onnx: sm.bytes.to_vec(),
    }
    .encode_to_vec();
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(proto::CONTENT_TYPE),
            ),
            (header::ETAG, etag_value),
        ],
        Body::from(body),
    )
        .into_response())
}

async fn infer_handler(
    State(state): State<AppState>,
    Path(set): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let set = state.set(checked_set_name(&set)?)?;
    let limit = state.0.config.max_body_bytes;
    let too_large =
        || ApiError::PayloadTooLarge(format!("request body is larger than {limit} bytes"));
    if content_length(&headers) > limit as u64 {
        return Err(too_large());
    }
    // The body first, under an upload slot and a deadline that grows with its size (so a
    // client trickling bytes is cut off and never holds an inference slot); then admission to
    // the inference queue.
    let upload = state
        .0
        .uploads
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::Overloaded("too many uploads at once; retry later".into()))?;
    let declared = content_length(&headers);
    let deadline = body_deadline(if declared > 0 { declared } else { limit as u64 });
    let body = tokio::time::timeout(deadline, axum::body::to_bytes(body, limit))
        .await
        .map_err(|_| ApiError::Timeout(format!("request body not received within {deadline:?}")))?
        .map_err(|e| {
            if std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            {
                too_large()
            } else {
                ApiError::BadRequest(format!("cannot read the request body: {e}"))
            }
        })?;
    drop(upload);
    let admitted = state
        .0
        .admitted
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::Overloaded("the inference queue is full; retry later".into()))?;
    let worker = state
        .0
        .workers
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| ApiError::Internal("server is shutting down".into()))?;
    let st = state.clone();
    let started = Instant::now();
    let result = tokio::task::spawn_blocking(move || {
        let _permits = (admitted, worker);
        let collect = st.0.config.collect.as_deref();
        infer::infer(&set.set, set.remote_full.as_ref(), &body, collect.is_some()).map(|a| {
            let m = &st.0.metrics;
            m.inference(set.name(), started.elapsed(), a.response.submodel_id);
            if let Some(id) = a.audited {
                m.audit(set.name(), id);
            }
            if let (Some(c), Some(pixels)) = (collect, &a.pixels) {
                c.record(&collect::Frame {
                    set: set.name(),
                    audited: a.audited,
                    pixels,
                    spec: set.manifest.full_input(),
                    answer: &a.response,
                });
            }
            a.response
        })
    })
    .await
    .map_err(|e| ApiError::Internal(format!("inference task failed: {e}")))??;
    Ok((
        [(header::CONTENT_TYPE, proto::CONTENT_TYPE)],
        result.encode_to_vec(),
    )
        .into_response())
}

/// A server running on its own thread and runtime (tests, benchmarks, embedding). Stops, after
/// finishing in-flight requests, when dropped.
pub struct Background {
    addr: std::net::SocketAddr,
    tls: bool,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    /// Bind `addr` (e.g. `127.0.0.1:0`) and serve `state` in the background.
    pub fn start(state: AppState, addr: &str) -> std::io::Result<Background> {
        let std_listener = std::net::TcpListener::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let local = std_listener.local_addr()?;
        let tls = state.config().tls.is_some();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("cachenet-edge".into())
            .spawn(move || {
                rt.block_on(async move {
                    match TcpListener::from_std(std_listener) {
                        Ok(l) => {
                            let stopped = async {
                                let _ = stop_rx.await;
                            };
                            if let Err(e) = serve(l, state, stopped).await {
                                tracing::error!("server: {e}");
                            }
                        }
                        Err(e) => tracing::error!("listener: {e}"),
                    }
                })
            })?;
        Ok(Background {
            addr: local,
            tls,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// `http://addr`, or `https://localhost:port` when serving TLS (certificates name hosts).
    pub fn url(&self) -> String {
        if self.tls {
            format!("https://localhost:{}", self.addr.port())
        } else {
            format!("http://{}", self.addr)
        }
    }

    /// Ask the server to stop (it stops accepting, finishes in-flight requests) without waiting.
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
