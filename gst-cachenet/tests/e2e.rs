//! End to end, as a user runs it: the real `cachenet-edge` process and `gst-launch-1.0` with
//! GST_PLUGIN_PATH pointing at the built plugin. Needs `cargo build --workspace` first (the
//! README's test command does it).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
        .join("debug")
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn gst_launch_against_a_running_cachenet_edge() {
    let edge_bin = target_dir().join("cachenet-edge");
    let plugin = target_dir().join("libgstcachenet.so");
    assert!(
        edge_bin.exists() && plugin.exists(),
        "build the workspace first (cargo build --workspace): {} / {}",
        edge_bin.display(),
        plugin.display()
    );
    let tiny = root().join("tests/fixtures/tiny");
    let port = free_port();
    let _edge = Kill(
        Command::new(&edge_bin)
            .args([
                "--model-dir",
                tiny.to_str().unwrap(),
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into();
    let deadline = Instant::now() + Duration::from_secs(30);
    while agent
        .get(format!("http://127.0.0.1:{port}/health/ready"))
        .call()
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(
            Instant::now() < deadline,
            "cachenet-edge never became ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // 5 black frames then 5 white ones: hits on submodel 0, a miss, a swap to submodel 1 in the
    // background, hits.
    let out = Command::new("gst-launch-1.0")
        .env("GST_PLUGIN_PATH", target_dir())
        .args([
            "-m",
            "videotestsrc",
            "num-buffers=5",
            "pattern=black",
            "!",
            "video/x-raw,format=RGB,width=64,height=48",
            "!",
            "concat",
            "name=c",
            "!",
            "cachenetclassify",
            &format!("edge-url=http://127.0.0.1:{port}"),
            &format!("model-dir={}", tiny.display()),
            "!",
            "fakesink",
            "videotestsrc",
            "num-buffers=5",
            "pattern=white",
            "!",
            "video/x-raw,format=RGB,width=64,height=48",
            "!",
            // camera pace: the swap (download + compile, on the element's worker) is ready
            // before the next frame
            "identity",
            "sleep-time=100000",
            "!",
            "c.",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("cachenet-result"))
        .collect();
    assert_eq!(results.len(), 10, "{stdout}");
    let edge = results
        .iter()
        .filter(|l| l.contains("source=(string)edge"))
        .count();
    let hits = results
        .iter()
        .filter(|l| l.contains("hit=(boolean)true"))
        .count();
    assert_eq!((edge, hits), (1, 9), "{stdout}");
    assert!(results[5].contains("label=(string)white") && results[5].contains("submodel=(int)1"));
    assert!(results[9].contains("submodel=(int)1") && results[9].contains("hit=(boolean)true"));
}
