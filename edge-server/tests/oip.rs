//! `--full-model oip+http://...` against a fake Open Inference Protocol v2 server on a bound
//! port (it runs the tiny set's own full model): the answers equal the in-process ones in
//! binary and JSON tensors; a server whose metadata does not match the manifest is refused at
//! start; a server that is down, answers 503 or is too slow makes the edge answer 503 (which a
//! camera retries or fails over on), and the edge answers again once the server is back.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cachenet_core::modelset::ModelSet;
use cachenet_core::proto::{self, infer_request::Image};
use cachenet_edge::oip::Options;
use cachenet_edge::{AppState, Background, Config, FullModelAt};
use prost::Message;

fn tiny() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny")
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Behaviour {
    Binary,
    JsonOnly,
    Unavailable,
    Slow(Duration),
}

struct Fake {
    set: ModelSet,
    shape: Vec<i64>,
    behaviour: Mutex<Behaviour>,
    calls: Mutex<u32>,
}

type Shared = Arc<Fake>;

async fn metadata(State(f): State<Shared>) -> Response {
    json(serde_json::json!({
        "name": "full", "platform": "onnxruntime_onnx",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": f.shape}],
        "outputs": [
            {"name": "features", "datatype": "FP32", "shape": [-1, 7]},
            {"name": "logits", "datatype": "FP32", "shape": [-1, 4]},
        ],
    }))
}

fn json(v: serde_json::Value) -> Response {
    (
        [("content-type", "application/json")],
        serde_json::to_vec(&v).unwrap(),
    )
        .into_response()
}

async fn infer(State(f): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    *f.calls.lock().unwrap() += 1;
    let behaviour = *f.behaviour.lock().unwrap();
    match behaviour {
        Behaviour::Unavailable => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Behaviour::Slow(d) => tokio::time::sleep(d).await,
        _ => {}
    }
    let json_len = headers
        .get("inference-header-content-length")
        .map(|v| v.to_str().unwrap().parse::<usize>().unwrap());
    if json_len.is_some() && behaviour == Behaviour::JsonOnly {
        return (StatusCode::BAD_REQUEST, "binary tensors are not supported").into_response();
    }
    let head: serde_json::Value =
        serde_json::from_slice(&body[..json_len.unwrap_or(body.len())]).unwrap();
    let input = &head["inputs"][0];
    assert_eq!(input["name"], "x");
    assert_eq!(input["shape"], serde_json::json!([1, 1, 8, 8]));
    let x: Vec<f32> = match json_len {
        Some(n) => body[n..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        None => input["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect(),
    };
    let logits = f.set.full.as_ref().unwrap().run(&x).unwrap();
    // Another output first: the edge must pick the one the manifest's labels fit.
    let features = [0.5f32; 7];
    if json_len.is_some() {
        let answer = serde_json::json!({"model_name": "full", "outputs": [
            {"name": "features", "datatype": "FP32", "shape": [1, 7],
             "parameters": {"binary_data_size": 28}},
            {"name": "logits", "datatype": "FP32", "shape": [1, 4],
             "parameters": {"binary_data_size": 16}},
        ]});
        let mut out = serde_json::to_vec(&answer).unwrap();
        let n = out.len();
        for v in features.iter().chain(&logits) {
            out.extend_from_slice(&v.to_le_bytes());
        }
        ([("inference-header-content-length", n.to_string())], out).into_response()
    } else {
        json(serde_json::json!({"model_name": "full", "outputs": [
            {"name": "features", "datatype": "FP32", "shape": [1, 7], "data": features},
            {"name": "logits", "datatype": "FP32", "shape": [1, 4], "data": logits},
        ]}))
    }
}

/// A fake inference server on a bound port, on its own runtime.
struct FakeServer {
    fake: Shared,
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeServer {
    fn start(shape: Vec<i64>, behaviour: Behaviour, port: u16) -> FakeServer {
        let fake = Arc::new(Fake {
            set: ModelSet::load(&tiny()).unwrap(),
            shape,
            behaviour: Mutex::new(behaviour),
            calls: Mutex::new(0),
        });
        let app = Router::new()
            .route("/v2/models/full/ready", get(|| async { "" }))
            .route("/v2/models/full", get(metadata))
            .route("/v2/models/full/infer", post(infer))
            .with_state(fake.clone());
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    let l = tokio::net::TcpListener::from_std(listener).unwrap();
                    axum::serve(l, app)
                        .with_graceful_shutdown(async {
                            let _ = stopped.await;
                        })
                        .await
                        .unwrap();
                })
        });
        FakeServer {
            fake,
            port,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("oip+http://127.0.0.1:{}/full", self.port)
    }

    fn set(&self, b: Behaviour) {
        *self.fake.behaviour.lock().unwrap() = b;
    }

    fn calls(&self) -> u32 {
        *self.fake.calls.lock().unwrap()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn config(full: Option<String>, timeout: Duration) -> Config {
    Config {
        model_dirs: vec![tiny()],
        full_models: full
            .map(|u| vec![u.parse::<FullModelAt>().unwrap()])
            .unwrap_or_default(),
        full_model_options: Options {
            timeout,
            wait: Duration::from_secs(5),
            ..Options::default()
        },
        ..Config::default()
    }
}

fn request(level: u8) -> Vec<u8> {
    proto::InferRequest {
        api_version: proto::API_VERSION,
        request_id: format!("{level}"),
        image: Some(Image::Raw(proto::RawFrame {
            pixels: vec![level; 64],
            width: 8,
            height: 8,
            channels: 1,
        })),
        ..Default::default()
    }
    .encode_to_vec()
}

/// POST one frame; the status and the answer when 200.
fn post_frame(edge: &Background, level: u8) -> (u16, Option<proto::InferResponse>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let mut r = agent
        .post(format!("{}/v1/models/tiny/infer", edge.url()))
        .header("content-type", proto::CONTENT_TYPE)
        .send(&request(level)[..])
        .unwrap();
    let status = r.status().as_u16();
    let body = r.body_mut().read_to_vec().unwrap();
    (
        status,
        (status == 200).then(|| proto::InferResponse::decode(&body[..]).unwrap()),
    )
}

fn same(a: &proto::InferResponse, b: &proto::InferResponse) {
    assert_eq!(a.class_id, b.class_id);
    assert_eq!(a.submodel_id, b.submodel_id);
    assert!((a.entropy - b.entropy).abs() < 1e-5);
    for (p, q) in a.probabilities.iter().zip(&b.probabilities) {
        assert!((p - q).abs() < 1e-6);
    }
}

#[test]
fn answers_equal_in_process_with_binary_and_json_tensors() {
    let local = Background::start(
        AppState::load(config(None, Duration::from_secs(1))).unwrap(),
        "127.0.0.1:0",
    )
    .unwrap();
    for behaviour in [Behaviour::Binary, Behaviour::JsonOnly] {
        // A server that batches lists the shape without the batch dimension.
        let shape = match behaviour {
            Behaviour::Binary => vec![-1, 1, 8, 8],
            _ => vec![1, 8, 8],
        };
        let server = FakeServer::start(shape, behaviour, 0);
        let state = AppState::load(config(Some(server.url()), Duration::from_secs(5))).unwrap();
        let edge = Background::start(state, "127.0.0.1:0").unwrap();
        for level in [0u8, 60, 140, 255] {
            let (s1, a) = post_frame(&local, level);
            let (s2, b) = post_frame(&edge, level);
            assert_eq!((s1, s2), (200, 200), "{behaviour:?} level {level}");
            same(&a.unwrap(), &b.unwrap());
        }
        assert!(
            server.calls() >= 4,
            "{behaviour:?}: the server ran the frames"
        );
    }
}

#[test]
fn a_server_whose_model_is_not_the_manifests_is_refused_at_start() {
    let server = FakeServer::start(vec![1, 3, 8, 8], Behaviour::Binary, 0);
    let err = AppState::load(config(Some(server.url()), Duration::from_secs(5)))
        .err()
        .expect("refused");
    assert!(err.contains("refusing to start"), "{err}");
    assert!(err.contains("[1, 1, 8, 8]"), "{err}");
    // Nothing listening: not ready within the wait, named.
    let port = server.port;
    drop(server);
    let mut c = config(
        Some(format!("oip+http://127.0.0.1:{port}/full")),
        Duration::from_secs(1),
    );
    c.full_model_options.wait = Duration::from_millis(300);
    let err = AppState::load(c).err().expect("refused");
    assert!(err.contains("not ready"), "{err}");
    // A set named that the edge does not serve.
    let err = AppState::load(config(
        Some("other=oip+http://127.0.0.1:1/full".into()),
        Duration::from_secs(1),
    ))
    .err()
    .expect("refused");
    assert!(err.contains("no model set is named"), "{err}");
}

#[test]
fn an_unavailable_server_is_a_503_to_the_camera_until_it_is_back() {
    let timeout = Duration::from_millis(300);
    let server = FakeServer::start(vec![1, 1, 8, 8], Behaviour::Binary, 0);
    let port = server.port;
    let edge = Background::start(
        AppState::load(config(Some(server.url()), timeout)).unwrap(),
        "127.0.0.1:0",
    )
    .unwrap();
    assert_eq!(post_frame(&edge, 200).0, 200);
    server.set(Behaviour::Unavailable);
    assert_eq!(post_frame(&edge, 200).0, 503);
    server.set(Behaviour::Slow(Duration::from_secs(2)));
    let t = Instant::now();
    assert_eq!(post_frame(&edge, 200).0, 503);
    assert!(
        t.elapsed() < timeout + Duration::from_millis(700),
        "bounded by --full-model-timeout-ms: {:?}",
        t.elapsed()
    );
    // Down altogether: the edge's readiness follows (a balancer takes it out of rotation);
    // back on the same port: ready and answering again.
    drop(server);
    assert_eq!(post_frame(&edge, 200).0, 503);
    ready_becomes(&edge, 503);
    let _server = FakeServer::start(vec![1, 1, 8, 8], Behaviour::Binary, port);
    ready_becomes(&edge, 200);
    assert_eq!(post_frame(&edge, 200).0, 200);
}

/// Poll the edge's /health/ready until it answers `status` (within a few checks).
fn ready_becomes(edge: &Background, status: u16) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let deadline = Instant::now() + 4 * cachenet_edge::UPSTREAM_CHECK;
    loop {
        let got = agent
            .get(format!("{}/health/ready", edge.url()))
            .call()
            .unwrap()
            .status()
            .as_u16();
        if got == status {
            return;
        }
        assert!(Instant::now() < deadline, "/health/ready stays {got}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_draining_edge_is_not_ready_but_still_answers() {
    let state = AppState::load(config(None, Duration::from_secs(1))).unwrap();
    let edge = Background::start(state.clone(), "127.0.0.1:0").unwrap();
    ready_becomes(&edge, 200);
    state.drain();
    ready_becomes(&edge, 503);
    assert_eq!(post_frame(&edge, 10).0, 200, "in-flight work still served");
}
