//! The edge server over real HTTP on 127.0.0.1:0: every endpoint and every error.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use cachenet_core::proto::{self, infer_request::Image};
use cachenet_core::sha256_hex;
use cachenet_edge::{AppState, Background, Config};
use prost::Message;

fn tiny() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny")
}

struct Server(Background);

impl Server {
    fn start_with(state: AppState) -> Server {
        Server(Background::start(state, "127.0.0.1:0").unwrap())
    }

    fn start(config: Config) -> Server {
        Server::start_with(AppState::load(config).unwrap())
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.0.url())
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.0.addr()
    }
}

fn config() -> Config {
    Config {
        model_dirs: vec![tiny()],
        ..Config::default()
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

struct Resp {
    status: u16,
    headers: ureq::http::HeaderMap,
    body: Vec<u8>,
}

impl Resp {
    fn error(&self) -> proto::Error {
        assert_eq!(
            self.headers["content-type"], "application/x-protobuf",
            "errors are protobuf"
        );
        proto::Error::decode(&self.body[..]).expect("an Error message")
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn get(url: &str, headers: &[(&str, &str)]) -> Resp {
    let mut req = agent().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut r = req.call().unwrap();
    Resp {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.body_mut().read_to_vec().unwrap(),
    }
}

fn post(url: &str, body: &[u8], headers: &[(&str, &str)]) -> Resp {
    let mut req = agent()
        .post(url)
        .header("content-type", "application/x-protobuf");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut r = req.send(body).unwrap();
    Resp {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.body_mut().read_to_vec().unwrap(),
    }
}

fn raw_request(value: u8) -> proto::InferRequest {
    proto::InferRequest {
        api_version: proto::API_VERSION,
        request_id: format!("frame-{value}"),
        image: Some(Image::Raw(proto::RawFrame {
            pixels: vec![value; 64],
            width: 8,
            height: 8,
            channels: 1,
        })),
        cached_submodels: vec![0],
        audited_submodel: None,
    }
}

fn infer_ok(s: &Server, req: &proto::InferRequest) -> proto::InferResponse {
    let r = post(&s.url("/v1/models/tiny/infer"), &req.encode_to_vec(), &[]);
    assert_eq!(r.status, 200, "{:?}", proto::Error::decode(&r.body[..]));
    proto::InferResponse::decode(&r.body[..]).unwrap()
}

#[test]
fn health_models_and_manifest() {
    let s = Server::start(config());
    assert_eq!(get(&s.url("/health/live"), &[]).status, 200);
    assert_eq!(get(&s.url("/health/ready"), &[]).status, 200);
    let r = get(&s.url("/v1/models"), &[]);
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["models"][0]["name"], "tiny");
    assert_eq!(v["models"][0]["k"], 2);
    let r = get(&s.url("/v1/models/tiny/manifest"), &[]);
    let m: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(m["submodels"][1]["file"], "submodel-1.onnx");
    assert_eq!(
        r.body,
        std::fs::read(tiny().join("manifest.json")).unwrap(),
        "the manifest file verbatim (devices pin its sha256)"
    );
    let r = get(&s.url("/v1/models/nope/manifest"), &[]);
    assert_eq!(r.status, 404);
    assert!(r.error().message.contains("nope"));
    assert_eq!(get(&s.url("/no/such/thing"), &[]).status, 404);
}

#[test]
fn not_ready_before_models_are_loaded() {
    let s = Server::start_with(AppState::new(config()));
    assert_eq!(get(&s.url("/health/live"), &[]).status, 200);
    let r = get(&s.url("/health/ready"), &[]);
    assert_eq!(r.status, 503);
    assert_eq!(r.error().code, "not_ready");
    assert_eq!(get(&s.url("/v1/models"), &[]).status, 503);
}

#[test]
fn submodel_download_etag_and_errors() {
    let s = Server::start(config());
    let r = get(&s.url("/v1/models/tiny/submodels/1"), &[]);
    assert_eq!(r.status, 200);
    let sm = proto::Submodel::decode(&r.body[..]).unwrap();
    let on_disk = std::fs::read(tiny().join("submodel-1.onnx")).unwrap();
    assert_eq!(sm.onnx, on_disk);
    assert_eq!(sm.sha256, sha256_hex(&on_disk));
    let etag = r.headers["etag"].to_str().unwrap().to_string();
    assert_eq!(etag, format!("\"{}\"", sm.sha256));
    let r = get(
        &s.url("/v1/models/tiny/submodels/1"),
        &[("if-none-match", &etag)],
    );
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    let r = get(
        &s.url("/v1/models/tiny/submodels/0"),
        &[("if-none-match", &etag)],
    );
    assert_eq!(r.status, 200, "another submodel's etag does not match");

    let r = get(&s.url("/v1/models/tiny/submodels/2"), &[]);
    assert_eq!(r.status, 404);
    assert!(r.error().message.contains("no submodel 2"));
    for bad in ["..%2F..%2Fmanifest.json", "submodel-0.onnx", "-1"] {
        let r = get(&s.url(&format!("/v1/models/tiny/submodels/{bad}")), &[]);
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(r.error().code, "bad_request");
    }
    let r = get(&s.url("/v1/models/..%2Ftiny/submodels/0"), &[]);
    assert_eq!(r.status, 400);
}

#[test]
fn infer_raw_and_encoded_frames() {
    let s = Server::start(config());
    let dark = infer_ok(&s, &raw_request(20));
    assert_eq!((dark.class_id, dark.label.as_str()), (0, "black"));
    assert_eq!(dark.submodel_id, 0);
    assert_eq!(dark.request_id, "frame-20");
    assert_eq!(dark.probabilities.len(), 4);
    assert!(dark.entropy < 0.01);
    assert_eq!(dark.soft_codes.len(), 2);
    let sha0 = sha256_hex(&std::fs::read(tiny().join("submodel-0.onnx")).unwrap());
    assert_eq!(dark.submodel_sha256, sha0);
    assert!(dark.timings.is_some());

    let bright = infer_ok(&s, &raw_request(240));
    assert_eq!((bright.class_id, bright.submodel_id), (3, 1));

    // A 32x24 PNG of value 100 is decoded and resized to 8x8: class "dark", submodel 0.
    let img = image::GrayImage::from_pixel(32, 24, image::Luma([100u8]));
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png).unwrap();
    let req = proto::InferRequest {
        api_version: 1,
        request_id: "png".into(),
        image: Some(Image::Encoded(png.into_inner())),
        cached_submodels: vec![],
        audited_submodel: None,
    };
    let r = infer_ok(&s, &req);
    assert_eq!((r.class_id, r.submodel_id), (1, 0));

    // An audit of a device's hit with submodel 1 is answered like any frame, and counted apart.
    let audit = proto::InferRequest {
        audited_submodel: Some(1),
        ..raw_request(240)
    };
    assert_eq!(infer_ok(&s, &audit).class_id, 3);

    let m = get(&s.url("/metrics"), &[]).text();
    assert!(
        m.contains("cachenet_submodel_selected_total{set=\"tiny\",submodel=\"0\"} 2"),
        "{m}"
    );
    assert!(m.contains("cachenet_submodel_selected_total{set=\"tiny\",submodel=\"1\"} 2"));
    assert!(
        m.contains("cachenet_requests_total{route=\"/v1/models/{set}/infer\",status=\"200\"} 4")
    );
    assert!(m.contains("cachenet_inference_seconds_count{set=\"tiny\"} 4"));
    assert!(
        m.contains("cachenet_audits_total{set=\"tiny\",submodel=\"1\"} 1"),
        "{m}"
    );
    assert!(!m.contains("cachenet_audits_total{set=\"tiny\",submodel=\"0\"}"));
    assert!(!m.contains("cachenet_bytes_in_total 0\n"));
}

#[test]
fn infer_bad_input_gets_400_with_a_message() {
    let s = Server::start(config());
    let url = s.url("/v1/models/tiny/infer");
    let r = post(&url, b"\xff\xff\xff garbage", &[]);
    assert_eq!(r.status, 400);
    assert!(
        r.error().message.contains("malformed InferRequest"),
        "{:?}",
        r.error()
    );

    let mut req = raw_request(20);
    if let Some(Image::Raw(f)) = &mut req.image {
        f.pixels.truncate(60);
    }
    let r = post(&url, &req.encode_to_vec(), &[]);
    assert_eq!(r.status, 400);
    assert!(
        r.error().message.contains("wrong tensor size"),
        "{:?}",
        r.error()
    );

    let mut req = raw_request(20);
    if let Some(Image::Raw(f)) = &mut req.image {
        f.width = 16;
        f.pixels = vec![0; 128];
    }
    let r = post(&url, &req.encode_to_vec(), &[]);
    assert!(r.error().message.contains("takes 8x8x1"), "{:?}", r.error());

    let mut req = raw_request(20);
    req.image = None;
    let r = post(&url, &req.encode_to_vec(), &[]);
    assert_eq!(
        (r.status, r.error().message.as_str()),
        (400, "InferRequest has no image")
    );

    let mut req = raw_request(20);
    req.api_version = 9;
    let r = post(&url, &req.encode_to_vec(), &[]);
    assert_eq!(r.status, 400);
    assert!(r.error().message.contains("api_version 9"));

    let mut req = raw_request(20);
    req.image = Some(Image::Encoded(b"not a png".to_vec()));
    let r = post(&url, &req.encode_to_vec(), &[]);
    assert_eq!(r.status, 400);
    assert!(r.error().message.contains("cannot decode"));

    let r = post(
        &s.url("/v1/models/other/infer"),
        &raw_request(1).encode_to_vec(),
        &[],
    );
    assert_eq!(r.status, 404);
}

#[test]
fn body_too_large_is_413() {
    let s = Server::start(Config {
        max_body_bytes: 1000,
        ..config()
    });
    let mut req = raw_request(20);
    req.image = Some(Image::Encoded(vec![7; 5000]));
    let r = post(&s.url("/v1/models/tiny/infer"), &req.encode_to_vec(), &[]);
    assert_eq!(r.status, 413);
    assert_eq!(r.error().code, "payload_too_large");
    // A small request still works on the same server.
    infer_ok(&s, &raw_request(20));
}

#[test]
fn bearer_token_is_required_when_configured() {
    let s = Server::start(Config {
        token: Some("s3cret".into()),
        ..config()
    });
    let url = s.url("/v1/models/tiny/submodels/0");
    let r = get(&url, &[]);
    assert_eq!(r.status, 401);
    assert_eq!(r.error().message, "missing bearer token");
    assert_eq!(r.headers["www-authenticate"], "Bearer");
    let r = get(&url, &[("authorization", "Bearer nope")]);
    assert_eq!(
        (r.status, r.error().message.as_str()),
        (401, "wrong bearer token")
    );
    assert_eq!(get(&url, &[("authorization", "Bearer s3cret")]).status, 200);
    let r = post(
        &s.url("/v1/models/tiny/infer"),
        &raw_request(20).encode_to_vec(),
        &[],
    );
    assert_eq!(r.status, 401);
    // Health and metrics stay open.
    assert_eq!(get(&s.url("/health/ready"), &[]).status, 200);
    assert_eq!(get(&s.url("/metrics"), &[]).status, 200);
}

/// Send the headers and half of an inference request body; the request then waits for the rest.
fn stalled_request(s: &Server) -> (TcpStream, Vec<u8>) {
    let body = raw_request(240).encode_to_vec();
    let mut c = TcpStream::connect(s.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        c,
        "POST /v1/models/tiny/infer HTTP/1.1\r\nHost: x\r\ncontent-type: application/x-protobuf\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    c.write_all(&body[..10]).unwrap();
    c.flush().unwrap();
    (c, body)
}

fn finish(mut c: TcpStream, body: &[u8]) -> String {
    c.write_all(&body[10..]).unwrap();
    answer(c)
}

fn answer(mut c: TcpStream) -> String {
    let mut out = Vec::new();
    c.read_to_end(&mut out).unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of one gauge on /metrics.
fn gauge(s: &Server, name: &str) -> usize {
    let m = get(&s.url("/metrics"), &[]).text();
    m.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in {m}"))
        .parse()
        .unwrap()
}

fn wait_for_gauge(s: &Server, name: &str, value: usize) {
    for _ in 0..250 {
        if gauge(s, name) == value {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{name} never reached {value}");
}

/// A request whose inference takes a while: a 4096x4096 PNG (small on the wire, 16 M pixels to
/// decode and scale down).
fn slow_request() -> Vec<u8> {
    let img = image::GrayImage::from_pixel(4096, 4096, image::Luma([100u8]));
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png).unwrap();
    proto::InferRequest {
        api_version: proto::API_VERSION,
        request_id: "big".into(),
        image: Some(Image::Encoded(png.into_inner())),
        cached_submodels: vec![],
        audited_submodel: None,
    }
    .encode_to_vec()
}

#[test]
fn full_queue_answers_503_fast_and_recovers() {
    let s = Server::start(Config {
        workers: 1,
        queue: 0,
        ..config()
    });
    let big = slow_request();
    let url = s.url("/v1/models/tiny/infer");
    // While the one worker computes the big frame, the next request is refused at once. The
    // big frame may finish before the small request arrives: then try again.
    for attempt in 0.. {
        assert!(attempt < 5, "never saw the queue full");
        let (u, b) = (url.clone(), big.clone());
        let busy = std::thread::spawn(move || post(&u, &b, &[]).status);
        while gauge(&s, "cachenet_inferences_admitted") == 0 && !busy.is_finished() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let t = std::time::Instant::now();
        let r = post(&url, &raw_request(20).encode_to_vec(), &[]);
        let took = t.elapsed();
        assert_eq!(busy.join().unwrap(), 200);
        if r.status == 200 {
            continue;
        }
        assert_eq!(r.status, 503);
        assert_eq!(r.error().code, "overloaded");
        assert_eq!(r.headers["retry-after"], "1");
        assert!(took < Duration::from_secs(2), "{took:?}");
        break;
    }
    infer_ok(&s, &raw_request(20));
}

/// Clients trickling their bodies never take an inference slot, and are cut off.
#[test]
fn slow_uploads_do_not_block_inference() {
    let s = Server::start(Config {
        workers: 1,
        queue: 0,
        ..config()
    });
    let stalled: Vec<_> = (0..3).map(|_| stalled_request(&s)).collect();
    wait_for_gauge(&s, "cachenet_uploads_in_progress", 3);
    assert_eq!(gauge(&s, "cachenet_inferences_admitted"), 0);
    infer_ok(&s, &raw_request(20));
    // A body that does not arrive within 2 s (+ its size at 1 MiB/s) gets 408.
    for (c, _) in stalled {
        let a = answer(c);
        assert!(a.starts_with("HTTP/1.1 408"), "{a}");
    }
    assert_eq!(gauge(&s, "cachenet_uploads_in_progress"), 0);
    // With every upload slot taken, the next upload is refused at once.
    let s = Server::start(Config {
        uploads: 1,
        ..config()
    });
    let (c, body) = stalled_request(&s);
    wait_for_gauge(&s, "cachenet_uploads_in_progress", 1);
    let r = post(
        &s.url("/v1/models/tiny/infer"),
        &raw_request(20).encode_to_vec(),
        &[],
    );
    assert_eq!((r.status, r.error().code.as_str()), (503, "overloaded"));
    assert!(finish(c, &body).starts_with("HTTP/1.1 200"));
}

/// A tiny PNG that declares a 22000x22000 image is refused from its header.
#[test]
fn decompression_bomb_is_refused_before_decoding() {
    fn crc32(data: &[u8]) -> u32 {
        let mut c = !0u32;
        for &b in data {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = b"IHDR".to_vec();
    chunk.extend(22000u32.to_be_bytes());
    chunk.extend(22000u32.to_be_bytes());
    chunk.extend([8, 0, 0, 0, 0]); // 8-bit gray
    png.extend(13u32.to_be_bytes());
    png.extend(&chunk);
    png.extend(crc32(&chunk).to_be_bytes());
    // The start of the image data: a few bytes of a zlib stream.
    let idat = [b'I', b'D', b'A', b'T', 0x78, 0x9c, 0, 0];
    png.extend(4u32.to_be_bytes());
    png.extend(idat);
    png.extend(crc32(&idat).to_be_bytes());
    let s = Server::start(config());
    let req = proto::InferRequest {
        api_version: proto::API_VERSION,
        request_id: "bomb".into(),
        image: Some(Image::Encoded(png)),
        cached_submodels: vec![],
        audited_submodel: None,
    };
    let r = post(&s.url("/v1/models/tiny/infer"), &req.encode_to_vec(), &[]);
    assert_eq!(r.status, 400);
    let m = r.error().message;
    assert!(
        m.contains("22000x22000") && m.contains("at most 4096x4096"),
        "{m}"
    );
    infer_ok(&s, &raw_request(20));
}

#[test]
fn graceful_shutdown_finishes_in_flight_requests() {
    let mut s = Server::start(Config {
        workers: 1,
        queue: 0,
        ..config()
    });
    let (c, body) = stalled_request(&s);
    wait_for_gauge(&s, "cachenet_uploads_in_progress", 1);
    let addr = s.addr();
    s.0.stop();
    // Shutting down: the listener refuses new connections while the request in flight is
    // still being read.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the listener never closed"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let answer = finish(c, &body);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("application/x-protobuf"));
    drop(s);
    assert!(
        TcpStream::connect(addr).is_err(),
        "listener closed after shutdown"
    );
}

/// HTTPS with a private CA made at test time: a client that trusts the CA gets answers, one that
/// does not is refused in the handshake, and plain HTTP gets no answer.
#[test]
fn https_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let files = cachenet_edge::listen::make_certs(dir.path(), &["localhost".into()]).unwrap();
    let tls = cachenet_edge::listen::tls_config(&files.cert, &files.key).unwrap();
    let s = Server::start(Config {
        tls: Some(tls),
        ..config()
    });
    let url = s.url("/v1/models/tiny/infer");
    assert!(url.starts_with("https://localhost:"), "{url}");
    let pem = std::fs::read(&files.ca).unwrap();
    let ca: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|i| match i.unwrap() {
            ureq::tls::PemItem::Certificate(c) => Some(c),
            _ => None,
        })
        .collect();
    let trusting: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::new_with_certs(&ca))
                .build(),
        )
        .build()
        .into();
    let mut r = trusting
        .post(&url)
        .send(&raw_request(240).encode_to_vec()[..])
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let resp = proto::InferResponse::decode(&r.body_mut().read_to_vec().unwrap()[..]).unwrap();
    assert_eq!(resp.class_id, 3);
    // Mozilla's roots do not include our CA.
    let e = agent().get(s.url("/health/live")).call().unwrap_err();
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
    // Plain HTTP to the TLS port: no HTTP answer.
    let plain = format!("http://{}/health/live", s.addr());
    assert!(agent().get(&plain).call().is_err());
    // The server still answers the trusting client afterwards.
    let r = trusting.get(s.url("/health/live")).call().unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

/// A connection that sends nothing (or trickles headers) is closed after the idle timeout.
#[test]
fn silent_connection_is_closed() {
    let s = Server::start(config());
    let mut c = TcpStream::connect(s.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    c.write_all(b"GET /health/live HTTP/1.1\r\n").unwrap();
    let t = std::time::Instant::now();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    let took = t.elapsed();
    assert!(
        took >= cachenet_edge::listen::IDLE - Duration::from_secs(1)
            && took < cachenet_edge::listen::IDLE + Duration::from_secs(15),
        "closed after {took:?}"
    );
}
