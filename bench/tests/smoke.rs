//! A smoke run of the whole bench on a few dozen frames with the shipped model set: real
//! cachenet-edge, real pipelines, emulated link. Needs `cargo build --workspace` first.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn bench_runs_every_mode_and_writes_its_outputs() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = tempfile_dir("smoke");
    let st = Command::new(env!("CARGO_BIN_EXE_cachenet-bench"))
        .current_dir(&root)
        .args([
            "--frames",
            "40",
            "--sequence",
            "grouped",
            "--device-cpu",
            "0.5",
            "--link",
            "wifi",
        ])
        .args([
            "--sweep",
            "0.6",
            "--cache-sizes",
            "2",
            "--compare-sequence",
            "",
            "--backends",
            "tract",
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&st.stderr);
    assert!(st.status.success(), "{stderr}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    let modes = json["modes"].as_array().unwrap();
    assert_eq!(modes.len(), 4);
    for m in modes {
        assert_eq!(m["frames"], 40, "{m}");
        assert!(m["fps"].as_f64().unwrap() > 0.0);
        assert!(m["peak_rss_mb"].as_f64().unwrap() > 1.0);
    }
    let by = |name: &str| modes.iter().find(|m| m["mode"] == name).unwrap();
    assert_eq!(by("device")["agreement"], 1.0);
    assert!(by("edge")["bytes_up"].as_u64().unwrap() > 40 * 784);
    assert_eq!(by("submodel-only")["bytes_up"], 0);
    assert_eq!(json["sweep"].as_array().unwrap().len(), 1);
    let backends: Vec<&str> = json["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["mode"].as_str().unwrap())
        .collect();
    assert_eq!(
        backends,
        ["device, backend=tract", "cachenet, backend=tract"]
    );
    assert_eq!(json["cache_sizes"].as_array().unwrap().len(), 1);
    assert_eq!(json["links"]["wifi"].as_array().unwrap().len(), 4);
    for m in modes {
        assert!(m["fps_element"].as_f64().unwrap() > 0.0);
    }
    // Every classifier timed on the engine's own plan and on tract's (and onnxruntime when
    // python3 has it).
    let engines = json["engines"].as_array().unwrap();
    assert_eq!(engines.len(), 5, "full model + 4 submodels");
    assert!(engines.iter().all(|e| e["tract_ms"].as_f64().unwrap() > 0.0
        && e["engine_ms"].as_f64().unwrap() > 0.0
        && e["plan"] == "direct"));
    // Edge mode: the edge does the work; its CPU time is measured.
    assert!(by("edge")["edge_cpu_s_per_1000"].as_f64().unwrap() > 0.0);
    assert_eq!(json["settings"]["link"]["name"], "wifi");
    assert!(json["overhead_640x480"]["fraction"].as_f64().unwrap() < 1.0);
    // The scaler alone, and the read-only pass over a frame.
    let scaler = &json["scaler_640x480"];
    assert_eq!(
        (scaler["width"].as_u64(), scaler["height"].as_u64()),
        (Some(640), Some(480))
    );
    for k in ["cached_us", "memory_us", "read_us"] {
        assert!(scaler[k].as_f64().unwrap() > 0.0, "{scaler}");
    }
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(
        md.contains("| device |")
            && md.contains("| cachenet |")
            && md.contains("The element's scaler alone"),
        "{md}"
    );
    let _ = std::fs::remove_dir_all(&out);
}

fn tempfile_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cachenet-bench-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The drift scenario alone on a few dozen frames: Device, then the fixed and the calibrated
/// CacheNet runs, interleaved, with the element's audit counters from its end-of-stream stats.
#[test]
fn drift_scenario_runs_and_counts_audits() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = tempfile_dir("drift");
    let st = Command::new(env!("CARGO_BIN_EXE_cachenet-bench"))
        .current_dir(&root)
        .args([
            "--frames",
            "60",
            "--sequence",
            "grouped",
            "--device-cpu",
            "0",
        ])
        .args(["--link", "none", "--drift", "grouped", "--drift-runs", "2"])
        .args(["--drift-audit-interval", "2", "--drift-only", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&st.stderr);
    assert!(st.status.success(), "{stderr}");
    assert!(
        !out.join("results.json").exists(),
        "--drift-only runs nothing else"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("drift.json")).unwrap()).unwrap();
    let rows = json["grouped"].as_array().unwrap();
    let modes: Vec<&str> = rows.iter().map(|r| r["mode"].as_str().unwrap()).collect();
    assert_eq!(
        modes,
        [
            "device",
            "cachenet, fixed threshold",
            "cachenet, target-agreement 0.97"
        ]
    );
    assert_eq!(
        stderr.matches(": cachenet audit-interval=2").count(),
        4,
        "two interleaved runs of each: {stderr}"
    );
    for r in &rows[1..] {
        let a = &r["audits"];
        let (sent, dropped) = (a["sent"].as_u64().unwrap(), a["dropped"].as_u64().unwrap());
        assert!(sent > 0 && sent + dropped <= 60, "{r}");
        assert!(a["answered"].as_u64().unwrap() <= sent);
        assert!(a["final_threshold"].as_f64().unwrap() > 0.0);
    }
    let md = std::fs::read_to_string(out.join("drift.md")).unwrap();
    assert!(
        md.contains("| grouped | cachenet, target-agreement 0.97 |"),
        "{md}"
    );
}

/// The fleet bench on a few cameras against one and two real edges (of the two, one killed and
/// started again mid-level): every level counts frames and misses answered by the edges, no
/// frame is left without one, and the table, the JSON and the cameras-per-core lines are
/// written.
#[test]
fn fleet_runs_cameras_against_one_and_two_edges() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_cachenet-bench"));
    let edge = bench.with_file_name("cachenet-edge");
    assert!(
        edge.exists(),
        "build the workspace first: {}",
        edge.display()
    );
    let out = tempfile_dir("fleet");
    let st = Command::new(&bench)
        .current_dir(&root)
        .args(["fleet", "--edge-bin"])
        .arg(&edge)
        .args([
            "--cameras",
            "4",
            "--edges",
            "1,2",
            "--seconds",
            "3",
            "--kill-one",
        ])
        .args([
            "--fps",
            "20",
            "--run-mean",
            "5",
            "--timeout-ms",
            "1000",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&st.stderr);
    assert!(st.status.success(), "{stderr}");
    let levels: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(out.join("fleet.json")).unwrap()).unwrap();
    assert_eq!(levels.len(), 2);
    for (l, edges) in levels.iter().zip([1, 2]) {
        assert_eq!(l["edges"], edges);
        assert!(l["frames"].as_u64().unwrap() > 40, "{l}");
        assert!(l["misses_answered"].as_u64().unwrap() > 0, "{l}");
        assert_eq!(l["unanswered"], 0, "{l}");
        assert!(l["edge_cpu_s"].as_f64().unwrap() > 0.0, "{l}");
        assert!(l["worst_frame_ms"].as_f64().unwrap() <= 2000.0, "{l}");
        assert_eq!(l["killed"], edges == 2, "{l}");
    }
    let md = std::fs::read_to_string(out.join("fleet.md")).unwrap();
    assert!(
        md.contains("| 2 (1 killed) | 4 |") && md.contains("edge(s):"),
        "{md}"
    );
}
