#![allow(dead_code)]
//! The real `cachenet-edge` process, as the end-to-end and fault tests run it. Needs the
//! binary built with the same profile first (`cargo build --workspace`: the README's test
//! command does it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the binaries and the plugin of this build are: the folder of the profile this test
/// was built with (`target/debug`, or another target folder or profile), found from the test
/// binary itself (`<profile>/deps/<test>`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(Path::parent)
        .expect("the test binary lives in <profile>/deps")
        .to_path_buf()
}

/// A child process killed (and reaped) when dropped.
pub struct Kill(pub Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `cachenet-edge` process serving `model_dir` on a free loopback port, once ready.
pub fn start_edge(model_dir: &Path) -> (Kill, u16) {
    let port = free_port();
    (start_edge_on(model_dir, port), port)
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `cachenet-edge` process serving `model_dir` on `port` (a restart on the same address),
/// once ready.
pub fn start_edge_on(model_dir: &Path, port: u16) -> Kill {
    start_edge_with(model_dir, port, &[])
}

/// [`start_edge_on`] with more flags (`--full-model ...`).
pub fn start_edge_with(model_dir: &Path, port: u16, extra: &[&str]) -> Kill {
    let edge_bin = target_dir().join("cachenet-edge");
    assert!(
        edge_bin.exists(),
        "build the workspace first (cargo build --workspace): {}",
        edge_bin.display()
    );
    let child = Kill(
        Command::new(&edge_bin)
            .args([
                "--model-dir",
                model_dir.to_str().unwrap(),
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_ready(&format!("http://127.0.0.1:{port}"), "cachenet-edge");
    child
}

/// Wait (at most 60 s) until `url`'s `/health/ready` answers 200; `what` names it in the failure.
pub fn wait_ready(url: &str, what: &str) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into();
    let deadline = Instant::now() + Duration::from_secs(60);
    while agent
        .get(format!("{url}/health/ready"))
        .call()
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "{what} never became ready");
        std::thread::sleep(Duration::from_millis(100));
    }
}
