//! The full model on an inference server: KServe's model server (`deploy/kserve/serve_onnx.py`,
//! in its own virtual environment, made by scripts/test.sh) serves the shipped full model over
//! the Open Inference Protocol v2 with onnxruntime; `cachenet-edge --full-model
//! oip+http://...` sends it the misses. The element's replay against that edge makes the same
//! decisions as against an edge that runs the full model in-process. With
//! `CACHENET_OIP_SERVER=triton` (scripts/test-triton.sh) the server is NVIDIA Triton through
//! PyTriton (`deploy/triton/serve_pytriton.py`, dynamic batching) instead.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use gst::prelude::*;

#[path = "common/process.rs"]
mod process;
use process::{Kill, free_port, start_edge_on, start_edge_with};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A Python from `var`, else `.data/<venv>`.
fn python(var: &str, venv: &str, setup: &str) -> PathBuf {
    let p = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".data").join(venv).join("bin/python"));
    assert!(
        p.exists(),
        "{} is missing: run {setup} (scripts/test.sh runs the KServe one)",
        p.display()
    );
    p
}

/// The inference server (KServe's, or Triton with CACHENET_OIP_SERVER=triton) serving `model`
/// as `name` on a free port; the edge waits for it to be ready.
fn inference_server(model: &Path, name: &str) -> (Kill, u16) {
    let port = free_port();
    let triton = std::env::var("CACHENET_OIP_SERVER").is_ok_and(|s| s == "triton");
    let mut cmd = if triton {
        let mut c = Command::new(python(
            "CACHENET_TRITON_PYTHON",
            "venv-triton",
            "scripts/test-triton.sh",
        ));
        c.arg(root().join("deploy/triton/serve_pytriton.py"))
            .args(["--model-name", name, "--model-file"])
            .arg(model)
            .args(["--http-port", &port.to_string()])
            .args(["--grpc-port", &free_port().to_string()])
            .args(["--metrics-port", &free_port().to_string()]);
        c
    } else {
        let mut c = Command::new(python(
            "CACHENET_KSERVE_PYTHON",
            "venv-kserve",
            "scripts/setup-kserve.sh",
        ));
        c.arg(root().join("deploy/kserve/serve_onnx.py"))
            .args(["--model_name", name, "--model_file"])
            .arg(model)
            .args(["--http_port", &port.to_string()])
            .args([
                "--enable_grpc",
                "false",
                "--enable_latency_logging",
                "false",
            ]);
        c
    };
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (Kill(child), port)
}

/// A frame folder made by scripts/test.sh.
fn data(name: &str) -> PathBuf {
    let p = root().join(".data").join(name);
    assert!(
        p.join("labels.csv").exists(),
        "{} is missing: run scripts/test.sh",
        p.display()
    );
    p
}

/// The element's (class id, source, hit, degraded) per frame, frames `frame-%05d.png` 0..n
/// of `dir`.
fn replay(dir: &Path, n: u32, props: &str) -> Vec<(i32, String, bool, bool)> {
    let p = gst::parse::launch(&format!(
        "multifilesrc location={}/frame-%05d.png index=0 stop-index={} \
           caps=image/png,framerate=30/1 ! pngdec ! videoconvert ! video/x-raw,format=GRAY8 \
         ! cachenetclassify {props} ! fakesink",
        dir.display(),
        n - 1
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    p.set_state(gst::State::Playing).unwrap();
    let bus = p.bus().unwrap();
    let mut out = Vec::new();
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(120)) {
        match msg.view() {
            gst::MessageView::Element(e) => {
                if let Some(s) = e.structure().filter(|s| s.name() == "cachenet-result") {
                    out.push((
                        s.get::<i32>("class-id").unwrap(),
                        s.get::<String>("source").unwrap(),
                        s.get::<bool>("hit").unwrap(),
                        s.get::<bool>("degraded").unwrap(),
                    ));
                }
            }
            gst::MessageView::Error(e) => panic!("{} ({:?})", e.error(), e.debug()),
            gst::MessageView::Eos(..) => break,
            _ => {}
        }
    }
    p.set_state(gst::State::Null).unwrap();
    assert_eq!(out.len(), n as usize, "a result per frame");
    out
}

#[test]
fn full_model_on_an_inference_server_makes_the_same_decisions_as_in_process() {
    gst::init().unwrap();
    gstcachenet::plugin_register_static().unwrap();
    let models = root().join("models/fashion-mnist");
    let (_server, server_port) = inference_server(&models.join("full.onnx"), "fashion-full");
    let (local_port, oip_port) = (free_port(), free_port());
    let _local = start_edge_on(&models, local_port);
    let url = format!("oip+http://127.0.0.1:{server_port}/fashion-full");
    let _oip = start_edge_with(&models, oip_port, &["--full-model", &url]);
    let frames = data("replay-grouped-1000");
    // CacheNet (the misses' answers and the submodels the edge picks) and Edge (every frame
    // answered by the full model), timeouts long enough for a loaded machine.
    for (mode, n) in [("cachenet", 1000), ("edge", 300)] {
        let props = |port: u16| {
            format!(
                "mode={mode} model-dir={} edge-url=http://127.0.0.1:{port} timeout-ms=10000",
                models.display()
            )
        };
        let local = replay(&frames, n, &props(local_port));
        let remote = replay(&frames, n, &props(oip_port));
        let same = local.iter().zip(&remote).filter(|(a, b)| a == b).count();
        let degraded = remote.iter().filter(|r| r.3).count();
        let misses = remote.iter().filter(|r| r.1 == "edge").count();
        println!("{mode}: {same}/{n} frames decided alike, {misses} answered by the server");
        assert!(misses > 0, "{mode}: the inference server answered nothing");
        assert_eq!(degraded, 0, "{mode}: frames without the server's answer");
        assert!(
            same as f64 >= 0.999 * n as f64,
            "{mode}: {same}/{n} frames decided alike"
        );
    }
}
