//! The retraining log (`--collect DIR`, `--collect-max-mb N`): the frames the edge answers for
//! misses and audits, each written as a PNG at the full model's input with a JSON file of the
//! full model's answer beside it, in one folder per model set. This is the material
//! `cachenet_train` takes to retrain or distil a set for these cameras (`distill --footage
//! DIR/<set>` reads the PNGs as an image folder). The folder is bounded: when it would grow past
//! its size, the oldest frames (by name: names start with the time) are deleted first, also
//! those of an earlier run. Writing never fails a request: an error is logged once per streak.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use cachenet_core::manifest::InputSpec;
use cachenet_core::proto;

/// One answered frame to collect: `pixels` HWC at `spec` (the full model's input), the full
/// model's `answer`; `audited`: the submodel whose hit it audits (else it was a miss).
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub set: &'a str,
    pub audited: Option<u32>,
    pub pixels: &'a [u8],
    pub spec: &'a InputSpec,
    pub answer: &'a proto::InferResponse,
}

impl Frame<'_> {
    fn kind(&self) -> &'static str {
        if self.audited.is_some() {
            "audit"
        } else {
            "miss"
        }
    }
}

/// The collected frames on disk, oldest first, and their total size.
#[derive(Debug, Default)]
struct Held {
    /// (frame file stem with its folder, bytes of its PNG and JSON)
    frames: VecDeque<(PathBuf, u64)>,
    bytes: u64,
}

/// Writes collected frames under a size bound.
#[derive(Debug)]
pub struct Collector {
    dir: PathBuf,
    max_bytes: u64,
    held: Mutex<Held>,
    seq: AtomicU64,
    failing: AtomicBool,
}

impl Collector {
    /// Open (create) `dir`, taking the frames an earlier run left there into account.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Collector, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("--collect {}: {e}", dir.display()))?;
        let mut found = Vec::new();
        let sets =
            std::fs::read_dir(dir).map_err(|e| format!("--collect {}: {e}", dir.display()))?;
        for set in sets.flatten().filter(|e| e.path().is_dir()) {
            for f in std::fs::read_dir(set.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let p = f.path();
                if p.extension().is_some_and(|e| e == "png") {
                    let stem = p.with_extension("");
                    let size = file_size(&p) + file_size(&stem.with_extension("json"));
                    let name = p.file_name().map(|n| n.to_os_string()).unwrap_or_default();
                    found.push((name, stem, size));
                }
            }
        }
        found.sort();
        let mut held = Held::default();
        for (_, stem, size) in found {
            held.bytes += size;
            held.frames.push_back((stem, size));
        }
        let c = Collector {
            dir: dir.to_path_buf(),
            max_bytes,
            held: Mutex::new(held),
            seq: AtomicU64::new(0),
            failing: AtomicBool::new(false),
        };
        c.evict(0);
        Ok(c)
    }

    /// Bytes held now (PNG and JSON files).
    pub fn bytes(&self) -> u64 {
        self.held.lock().unwrap().bytes
    }

    /// Write one answered frame (errors are logged once per streak, never returned).
    pub fn record(&self, frame: &Frame<'_>) {
        match self.write(frame) {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("--collect: writing frames again");
                }
            }
            Err(e) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "--collect: cannot write a frame ({e}); frames are not collected until writing works again"
                    );
                }
            }
        }
    }

    fn write(&self, f: &Frame<'_>) -> Result<(), String> {
        let (set, kind, audited, pixels, spec, answer) =
            (f.set, f.kind(), f.audited, f.pixels, f.spec, f.answer);
        let (w, h) = (spec.width as u32, spec.height as u32);
        let image = match spec.channels {
            1 => image::DynamicImage::ImageLuma8(
                image::GrayImage::from_raw(w, h, pixels.to_vec()).ok_or("frame size")?,
            ),
            3 => image::DynamicImage::ImageRgb8(
                image::RgbImage::from_raw(w, h, pixels.to_vec()).ok_or("frame size")?,
            ),
            c => return Err(format!("{c} channels")),
        };
        let mut png = std::io::Cursor::new(Vec::new());
        image
            .write_to(&mut png, image::ImageFormat::Png)
            .map_err(|e| e.to_string())?;
        let png = png.into_inner();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let folder = self.dir.join(set);
        let stem = folder.join(format!("{now:015}-{seq:08}-{}", kind));
        let json = serde_json::json!({
            "set": set,
            "kind": kind,
            "audited_submodel": audited,
            "class_id": answer.class_id,
            "label": answer.label,
            "entropy": answer.entropy,
            "probabilities": answer.probabilities,
            "submodel": answer.submodel_id,
            "time_ms": now as u64,
        });
        let json = serde_json::to_vec_pretty(&json).map_err(|e| e.to_string())?;
        let size = (png.len() + json.len()) as u64;
        if size > self.max_bytes {
            return Err(format!("one frame ({size} bytes) exceeds --collect-max-mb"));
        }
        std::fs::create_dir_all(&folder).map_err(|e| e.to_string())?;
        // The answer first: a PNG without its JSON is never left behind by a failed write.
        std::fs::write(stem.with_extension("json"), &json).map_err(|e| e.to_string())?;
        if let Err(e) = std::fs::write(stem.with_extension("png"), &png) {
            let _ = std::fs::remove_file(stem.with_extension("json"));
            return Err(e.to_string());
        }
        self.evict(size);
        let mut held = self.held.lock().unwrap();
        held.bytes += size;
        held.frames.push_back((stem, size));
        Ok(())
    }

    /// Delete the oldest frames until `incoming` more bytes fit (files deleted outside the lock).
    fn evict(&self, incoming: u64) {
        let victims: Vec<PathBuf> = {
            let mut held = self.held.lock().unwrap();
            let mut v = Vec::new();
            while held.bytes + incoming > self.max_bytes {
                let Some((stem, size)) = held.frames.pop_front() else {
                    break;
                };
                held.bytes -= size;
                v.push(stem);
            }
            v
        };
        for stem in victims {
            let _ = std::fs::remove_file(stem.with_extension("png"));
            let _ = std::fs::remove_file(stem.with_extension("json"));
        }
    }
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cachenet_core::manifest::Color;

    fn gray(w: usize, h: usize) -> InputSpec {
        InputSpec {
            width: w,
            height: h,
            channels: 1,
            color: Color::Gray,
            layout: "NCHW".into(),
            mean: vec![0.0],
            std: vec![1.0],
        }
    }

    fn answer(class_id: u32) -> proto::InferResponse {
        proto::InferResponse {
            class_id,
            label: format!("class {class_id}"),
            probabilities: vec![0.5, 0.5],
            entropy: 0.69,
            ..Default::default()
        }
    }

    fn pngs(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".png"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn frames_are_written_with_their_answer_and_the_oldest_dropped_first() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = gray(16, 16);
        let noise: Vec<u8> = (0..256u32).map(|i| (i * 97 % 251) as u8).collect();
        let probe = Collector::open(&tmp.path().join("probe"), u64::MAX).unwrap();
        let record = |c: &Collector, audited: Option<u32>, class: u32| {
            c.record(&Frame {
                set: "s",
                audited,
                pixels: &noise,
                spec: &spec,
                answer: &answer(class),
            })
        };
        record(&probe, None, 1);
        let one = probe.bytes();
        assert!(one > 0);
        // Room for three frames.
        let c = Collector::open(&tmp.path().join("c"), 3 * one + one / 2).unwrap();
        for i in 0..5 {
            record(&c, (i % 2 == 1).then_some(0), i);
        }
        let folder = tmp.path().join("c/s");
        let files = pngs(&folder);
        assert_eq!(files.len(), 3, "{files:?}");
        assert!(c.bytes() <= 3 * one + one / 2);
        // The newest three remain: answers 2, 3, 4.
        let classes: Vec<u64> = files
            .iter()
            .map(|f| {
                let j: serde_json::Value = serde_json::from_slice(
                    &std::fs::read(folder.join(f).with_extension("json")).unwrap(),
                )
                .unwrap();
                j["class_id"].as_u64().unwrap()
            })
            .collect();
        assert_eq!(classes, [2, 3, 4]);
        assert!(files[1].ends_with("-audit.png"), "{files:?}");
        let img = image::open(folder.join(&files[0])).unwrap().to_luma8();
        assert_eq!((img.width(), img.height(), img.as_raw()), (16, 16, &noise));
        // A restart takes the frames on disk into account and keeps within the bound.
        drop(c);
        let c = Collector::open(&tmp.path().join("c"), 2 * one + one / 2).unwrap();
        assert_eq!(pngs(&folder).len(), 2, "the oldest dropped at start");
        record(&c, None, 9);
        assert_eq!(pngs(&folder).len(), 2);
    }
}
