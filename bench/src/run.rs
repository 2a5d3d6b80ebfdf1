//! Run the device pipeline as its own process, confined to a CPU fraction (cgroup v1 `cpu`
//! controller, as root) and pinned with `taskset`, sampling its CPU time and peak memory.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::report::Usage;

/// A cgroup v1 CPU quota; removed when dropped.
#[derive(Debug)]
pub struct CpuLimit {
    dir: Option<PathBuf>,
    pub fraction: Option<f64>,
}

impl CpuLimit {
    /// Create `/sys/fs/cgroup/cpu/cachenet-bench-<pid>` with quota `fraction` of one CPU.
    /// Returns the limit and, when it could not be applied, why.
    pub fn new(fraction: Option<f64>) -> (CpuLimit, Option<String>) {
        let Some(f) = fraction else {
            return (
                CpuLimit {
                    dir: None,
                    fraction: None,
                },
                None,
            );
        };
        let dir = PathBuf::from(format!(
            "/sys/fs/cgroup/cpu/cachenet-bench-{}",
            std::process::id()
        ));
        let period = 100_000u64;
        let quota = ((f * period as f64) as u64).max(1000);
        let setup = std::fs::create_dir_all(&dir)
            .and_then(|_| std::fs::write(dir.join("cpu.cfs_period_us"), period.to_string()))
            .and_then(|_| std::fs::write(dir.join("cpu.cfs_quota_us"), quota.to_string()));
        match setup {
            Ok(()) => (
                CpuLimit {
                    dir: Some(dir),
                    fraction: Some(f),
                },
                None,
            ),
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                (
                    CpuLimit {
                        dir: None,
                        fraction: None,
                    },
                    Some(format!(
                        "no CPU limit applied (cgroup v1 cpu controller as root needed): {e}"
                    )),
                )
            }
        }
    }

    fn attach(&self, pid: u32) -> std::io::Result<()> {
        match &self.dir {
            Some(d) => std::fs::write(d.join("cgroup.procs"), pid.to_string()),
            None => Ok(()),
        }
    }
}

impl Drop for CpuLimit {
    fn drop(&mut self) {
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir(d);
        }
    }
}

fn proc_usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // fields 14 and 15 (utime, stime) are at 11 and 12 after the command name
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Some((ticks / 100.0, hwm))
}

/// Run `cmd` (its stdout captured) inside `limit`, pinned to `cpu` when given, for at most
/// `timeout`. Returns stdout and the process's resource use.
pub fn run_measured(
    program: &str,
    args: &[String],
    envs: &[(String, String)],
    limit: &CpuLimit,
    cpu: Option<usize>,
    timeout: Duration,
) -> std::io::Result<(String, Usage, bool)> {
    let mut cmd = match cpu {
        Some(c) if which("taskset") => {
            let mut c2 = Command::new("taskset");
            c2.arg("-c").arg(c.to_string()).arg(program);
            c2
        }
        _ => Command::new(program),
    };
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let start = Instant::now();
    let mut child = cmd.spawn()?;
    limit.attach(child.id())?;
    let mut out = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let mut err = child.stderr.take().expect("piped");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let mut usage = Usage::default();
    let ok;
    loop {
        if let Some((cpu_s, hwm)) = proc_usage(child.id()) {
            usage.cpu_s = cpu_s;
            usage.peak_rss_kb = usage.peak_rss_kb.max(hwm);
        }
        if let Some(status) = child.try_wait()? {
            ok = status.success();
            break;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            ok = false;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    usage.wall_s = start.elapsed().as_secs_f64();
    let stdout = reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    if !ok {
        eprintln!(
            "pipeline failed: {}",
            stderr.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
        );
    }
    Ok((stdout, usage, ok))
}

pub fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).exists()))
}

/// CPU seconds (user + system) of process `pid` so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // fields 14 and 15 of stat (utime, stime) are 12 and 13 after the command name
    (ticks(11) + ticks(12)) / 100.0
}

/// Wait until `url`'s `/health/ready` answers 200 (an edge or a balancer), at most `limit`.
pub fn wait_ready(url: &str, limit: std::time::Duration) -> Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(2)))
        .build()
        .into();
    let deadline = std::time::Instant::now() + limit;
    while agent
        .get(format!("{url}/health/ready"))
        .call()
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        if std::time::Instant::now() > deadline {
            return Err(format!("{url} never became ready"));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Ok(())
}

/// The `p` quantile (0..=1, nearest rank) of microsecond samples, in milliseconds (NaN when
/// there are none). Sorts `v`.
pub fn percentile_ms(v: &mut [u64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
}
