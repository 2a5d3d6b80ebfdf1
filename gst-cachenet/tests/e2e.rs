//! End to end, as a user runs it: the real `cachenet-edge` process and `gst-launch-1.0` with
//! GST_PLUGIN_PATH pointing at the built plugin. Needs `cargo build --workspace` first (the
//! README's test command does it).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;

#[path = "common/process.rs"]
mod process;
use process::{start_edge, target_dir};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The stdout of a finished gst-launch-1.0 that must have succeeded.
fn succeeded(out: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// OpenCV's street video, fetched by `python3 -m cachenet_train fetch vtest` (the test script
/// does it).
fn vtest() -> PathBuf {
    let root = std::env::var_os("CACHENET_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/cachenet/data")
        });
    let p = root.join("vtest.avi");
    assert!(
        p.exists(),
        "{} is missing: run `cd models && python3 -m cachenet_train fetch vtest`",
        p.display()
    );
    p
}

/// Per-object classification on real video: an upstream "detector" (a pad probe) puts three
/// regions on every frame of vtest.avi (one moving and one still region without tracker ids,
/// one with a tracker id); `cachenetclassify regions=roi` with the shipped model set and the
/// real edge process classifies each as its own object, at most one offload per frame.
#[test]
fn regions_on_real_video_with_the_shipped_models_and_the_edge_process() {
    let models = root().join("models/fashion-mnist");
    let (_edge, port) = start_edge(&models);
    gst::init().unwrap();
    gstcachenet::plugin_register_static().unwrap();
    const FRAMES: u64 = 60;
    let p = gst::parse::launch(&format!(
        "filesrc location={} ! decodebin ! videoconvert ! video/x-raw,format=RGB \
         ! identity name=detector ! cachenetclassify name=c regions=roi cache-size=2 \
           max-offloads=1 model-dir={} edge-url=http://127.0.0.1:{port} unique-id=3 \
         ! fakesink name=sink",
        vtest().display(),
        models.display()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let detector = p.by_name("detector").unwrap();
    let n = Arc::new(Mutex::new(0u32));
    let n2 = n.clone();
    detector
        .static_pad("src")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            let mut f = n2.lock().unwrap();
            if let Some(gst::PadProbeData::Buffer(buf)) = info.data.as_mut() {
                let b = buf.make_mut();
                gst_video::VideoRegionOfInterestMeta::add(
                    b,
                    "person",
                    (100 + 2 * *f, 200, 96, 160),
                );
                gst_video::VideoRegionOfInterestMeta::add(b, "person", (500, 150, 80, 200));
                let mut bag =
                    gst_video::VideoRegionOfInterestMeta::add(b, "bag", (300, 400, 64, 64));
                bag.set_id(42);
            }
            *f += 1;
            gst::PadProbeReturn::Ok
        });
    // Every buffer leaves with a result on each of its regions.
    let per_buffer = Arc::new(Mutex::new(Vec::new()));
    let pb = per_buffer.clone();
    p.by_name("sink")
        .unwrap()
        .static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(gst::PadProbeData::Buffer(buf)) = info.data.as_ref() {
                pb.lock()
                    .unwrap()
                    .push(gstcachenet::result::Classification::regions(buf));
            }
            gst::PadProbeReturn::Ok
        });
    p.set_state(gst::State::Playing).unwrap();
    let bus = p.bus().unwrap();
    let mut by_frame: HashMap<u64, Vec<gst::Structure>> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while (by_frame.len() as u64) < FRAMES + 1 {
        assert!(
            Instant::now() < deadline,
            "too slow: {} frames",
            by_frame.len()
        );
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_seconds(5)) else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Element(e) => {
                if let Some(s) = e.structure().filter(|s| s.name() == "cachenet-result") {
                    by_frame
                        .entry(s.get::<u64>("frame").unwrap())
                        .or_default()
                        .push(s.to_owned());
                }
            }
            gst::MessageView::Error(e) => panic!("{} ({:?})", e.error(), e.debug()),
            gst::MessageView::Eos(..) => panic!("vtest.avi ended early"),
            _ => {}
        }
    }
    let stats = p.by_name("c").unwrap().property::<gst::Structure>("stats");
    p.set_state(gst::State::Null).unwrap();
    let mut objects = HashSet::new();
    let mut offloads = 0;
    for f in 0..FRAMES {
        let rs = &by_frame[&f];
        assert_eq!(rs.len(), 3, "frame {f}: one result per region");
        let edge = rs
            .iter()
            .filter(|s| s.get::<&str>("source").unwrap() == "edge")
            .count();
        assert!(edge <= 1, "frame {f}: max-offloads=1 but {edge} offloads");
        offloads += edge;
        for s in rs {
            assert_eq!(s.get::<u32>("unique-id").unwrap(), 3);
            assert!(s.get::<i32>("class-id").unwrap() >= 0, "{s}");
            objects.insert(s.get::<u64>("object-id").unwrap());
        }
    }
    assert_eq!(objects.len(), 3, "three objects all along: {objects:?}");
    let buffers = per_buffer.lock().unwrap();
    assert!(buffers.len() as u64 >= FRAMES);
    for regions in buffers.iter().take(FRAMES as usize) {
        let types: Vec<&str> = regions.iter().map(|(t, _, _)| t.as_str()).collect();
        assert_eq!(types, vec!["person", "person", "bag"]);
    }
    let hits = stats.get::<u64>("hits").unwrap();
    let classified = stats.get::<u64>("frames").unwrap();
    println!(
        "{FRAMES} frames, 3 regions each: {offloads} offloads, {hits} hits of {classified} \
         classifications; {stats}"
    );
    assert!(offloads >= 1, "new objects miss and are offloaded at first");
    assert!(
        hits * 2 > classified,
        "each object settles on its submodel: {hits} hits of {classified}"
    );
}

/// As a user runs it: GStreamer's own detector (`facedetect` with OpenCV's full-body cascade)
/// finds the pedestrians of vtest.avi, `cachenetclassify regions=roi` classifies each with
/// the shipped model set and the edge process, in gst-launch-1.0 (first 120 frames).
#[test]
fn gst_launch_facedetect_regions_on_real_video() {
    let cascade = "/usr/share/opencv4/haarcascades/haarcascade_fullbody.xml";
    assert!(
        std::path::Path::new(cascade).exists(),
        "{cascade} is missing: install gstreamer1.0-opencv (scripts/setup.sh does)"
    );
    let models = root().join("models/fashion-mnist");
    let (_edge, port) = start_edge(&models);
    let video = vtest();
    let out = Command::new("gst-launch-1.0")
        .env("GST_PLUGIN_PATH", target_dir())
        .args(["-m", "filesrc"])
        .arg(format!("location={}", video.display()))
        .args([
            "!",
            "decodebin",
            "!",
            "identity",
            "eos-after=120",
            "!",
            "videoconvert",
        ])
        .args([
            "!",
            "facedetect",
            "display=false",
            "min-size-width=24",
            "min-size-height=48",
        ])
        .arg(format!("profile={cascade}"))
        .args([
            "!",
            "videoconvert",
            "!",
            "cachenetclassify",
            "regions=roi",
            "max-offloads=1",
        ])
        .arg(format!("model-dir={}", models.display()))
        .arg(format!("edge-url=http://127.0.0.1:{port}"))
        .args(["!", "fakesink"])
        .output()
        .unwrap();
    let stdout = succeeded(&out);
    let field = |l: &str, name: &str| -> String {
        let at = l
            .find(&format!("{name}=("))
            .unwrap_or_else(|| panic!("{name} in {l}"));
        let v = &l[at..];
        let v = &v[v.find(')').unwrap() + 1..];
        v[..v.find([',', ';']).unwrap_or(v.len())].to_string()
    };
    let results: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("cachenet-result"))
        .collect();
    let mut per_frame: HashMap<String, usize> = HashMap::new();
    let mut objects = HashSet::new();
    for l in &results {
        assert_eq!(field(l, "roi-type"), "face", "{l}");
        objects.insert(field(l, "object-id"));
        if field(l, "source") == "edge" {
            *per_frame.entry(field(l, "frame")).or_default() += 1;
        }
    }
    let frames: HashSet<String> = results.iter().map(|l| field(l, "frame")).collect();
    println!(
        "{} regions on {} of 120 frames, {} objects, {} offloads",
        results.len(),
        frames.len(),
        objects.len(),
        per_frame.values().sum::<usize>()
    );
    assert!(
        frames.len() > 60,
        "pedestrians found on most frames: {}",
        frames.len()
    );
    assert!(
        results.len() > frames.len(),
        "several pedestrians per frame"
    );
    assert!(
        objects.len() > 1 && objects.len() < results.len(),
        "objects persist across frames"
    );
    assert!(
        per_frame.values().all(|&n| n <= 1),
        "max-offloads=1 per frame"
    );
    assert!(!per_frame.is_empty(), "misses went to the edge");
}

#[test]
fn gst_launch_against_a_running_cachenet_edge() {
    let plugin = target_dir().join("libgstcachenet.so");
    assert!(
        plugin.exists(),
        "build the workspace first (cargo build --workspace): {}",
        plugin.display()
    );
    let tiny = root().join("tests/fixtures/tiny");
    let (_edge, port) = start_edge(&tiny);
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
    let stdout = succeeded(&out);
    let results: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("cachenet-result"))
        .collect();
    assert_eq!(results.len(), 10, "{stdout}");
    // Black frames hit submodel 0. The first white frame misses and the edge answers with
    // submodel 1; every white frame after it is an edge answer until submodel 1 is ready (a
    // prefetch may have made it ready already), then a hit on it, to the end.
    let hit_on = |l: &str, sub: &str| l.contains("hit=(boolean)true") && l.contains(sub);
    assert!(
        results[..5].iter().all(|l| hit_on(l, "submodel=(int)0")),
        "{stdout}"
    );
    assert!(results[5].contains("label=(string)white") && results[5].contains("submodel=(int)1"));
    assert!(results[5].contains("source=(string)edge"), "{stdout}");
    let first_hit = (5..10)
        .find(|&i| hit_on(results[i], "submodel=(int)1"))
        .expect("submodel 1 never answered locally");
    assert!(
        results[5..first_hit]
            .iter()
            .all(|l| l.contains("source=(string)edge")),
        "{stdout}"
    );
    assert!(
        results[first_hit..]
            .iter()
            .all(|l| hit_on(l, "submodel=(int)1")),
        "{stdout}"
    );
}

/// The answers of `cachenetclassify` (`props`) on frames [first, first + n) of vtest.avi, in
/// frame order: (class id, source, hit).
fn vtest_answers(props: &str, first: u64, n: u64) -> Vec<(i32, String, bool)> {
    let p = gst::parse::launch(&format!(
        "filesrc location={} ! decodebin ! videoconvert ! video/x-raw,format=RGB \
         ! identity name=skip ! cachenetclassify {props} ! fakesink",
        vtest().display(),
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    // Frames before `first` never reach the element.
    let seen = Arc::new(Mutex::new(0u64));
    let s2 = seen.clone();
    p.by_name("skip")
        .unwrap()
        .static_pad("src")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            let mut s = s2.lock().unwrap();
            *s += 1;
            if *s <= first {
                gst::PadProbeReturn::Drop
            } else {
                gst::PadProbeReturn::Ok
            }
        });
    p.set_state(gst::State::Playing).unwrap();
    let bus = p.bus().unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    while (out.len() as u64) < n {
        assert!(Instant::now() < deadline, "too slow: {} frames", out.len());
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_seconds(5)) else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Element(e) => {
                if let Some(s) = e.structure().filter(|s| s.name() == "cachenet-result") {
                    out.push((
                        s.get::<i32>("class-id").unwrap(),
                        s.get::<String>("source").unwrap(),
                        s.get::<bool>("hit").unwrap(),
                    ));
                }
            }
            gst::MessageView::Error(e) => panic!("{} ({:?})", e.error(), e.debug()),
            gst::MessageView::Eos(..) => panic!("vtest.avi ended early"),
            _ => {}
        }
    }
    p.set_state(gst::State::Null).unwrap();
    out
}

/// The shipped real-footage set (EfficientNet-Lite0 at 224x224 as the full model, specialists
/// at 112x112) on 60 frames of the held-out end of vtest.avi, with the real edge process: the
/// edge's answers are the teacher's own (the device running the full model on the same frames
/// gives the same class on every offloaded frame), and the camera's specialist answers some
/// frames locally.
#[test]
fn real_footage_set_on_held_out_frames_with_the_edge_process() {
    let models = root().join("models/real-footage");
    let (_edge, port) = start_edge(&models);
    gst::init().unwrap();
    gstcachenet::plugin_register_static().unwrap();
    // vtest.avi has 795 frames; the set trained on the first 70 % (556).
    const FIRST: u64 = 600;
    const N: u64 = 60;
    let dir = models.display();
    let cachenet = vtest_answers(
        &format!("model-dir={dir} edge-url=http://127.0.0.1:{port}"),
        FIRST,
        N,
    );
    let device = vtest_answers(&format!("mode=device model-dir={dir}"), FIRST, N);
    let mut hits = 0;
    for (i, ((c, source, hit), (d, _, _))) in cachenet.iter().zip(&device).enumerate() {
        if source == "edge" {
            assert_eq!(c, d, "frame {i}: the edge's full model is the device's");
        }
        hits += usize::from(*hit);
    }
    let agree = cachenet
        .iter()
        .zip(&device)
        .filter(|(a, b)| a.0 == b.0)
        .count();
    println!("{N} held-out frames: {hits} hits, agreement with the full model {agree}/{N}");
    assert!(hits > 0, "the specialist never answered locally");
    assert!(hits < N as usize, "no frame was offloaded");
}
