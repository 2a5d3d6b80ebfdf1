//! Every backend this build has makes the same decisions on the same frames: the Fashion-MNIST
//! grouped replay (1,000 frames, the shipped set) and real frames (vtest.avi's held-out end
//! through the shipped real-footage set: 224x224 teacher, 112x112 depthwise specialists), each
//! frame scaled and normalised as the element does, through the full model and every submodel
//! on tract's plan (the reference), `auto` (the engine's own plan where it takes the graph),
//! `auto` with the AVX-512 paths switched off (the path of ARM boards and most desktop CPUs),
//! and onnxruntime on the CPU (feature `onnxruntime`; `scripts/test.sh` runs it with the
//! wheel's library). Required against the reference: the same top-1 and, for submodels, the
//! same hit/miss decision at the set's threshold on >= 99.9 % of frames; probabilities within
//! 1e-4 and entropies within 1e-4 nats.
//!
//! The frames are made by `scripts/test.sh` (below, `data()` names the commands). One test in
//! this binary: the AVX-512 switch is process-wide.

use std::path::{Path, PathBuf};

use cachenet_core::engine::{BackendChoice, Engine};
use cachenet_core::manifest::{InputSpec, Manifest};
use cachenet_core::maths::Classification;
use cachenet_core::modelset::{load_local_full, load_local_submodel};
use cachenet_core::preprocess::normalize_into;
use cachenet_core::scaler::{Layout, Planes, Scaler, YuvMatrix};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A frame folder made by `scripts/test.sh`; the command that makes it when it is missing.
fn data(name: &str, command: &str) -> PathBuf {
    let p = repo().join(".data").join(name);
    assert!(
        p.join("labels.csv").exists(),
        "{} is missing: run `cd models && {command}` (scripts/test.sh does)",
        p.display()
    );
    p
}

/// The frames of `dir` (frame-%05d.png), at most `limit`, as (layout, width, height, pixels).
fn frames(dir: &Path, limit: usize) -> Vec<(Layout, usize, usize, Vec<u8>)> {
    (0..limit)
        .map_while(|i| {
            let img = image::open(dir.join(format!("frame-{i:05}.png"))).ok()?;
            let (w, h) = (img.width() as usize, img.height() as usize);
            Some(if img.color().has_color() {
                (Layout::RGB, w, h, img.into_rgb8().into_raw())
            } else {
                (Layout::Gray, w, h, img.into_luma8().into_raw())
            })
        })
        .collect()
}

/// Each frame scaled (the element's area scaler) and normalised to `spec`.
fn tensors(frames: &[(Layout, usize, usize, Vec<u8>)], spec: &InputSpec) -> Vec<Vec<f32>> {
    frames
        .iter()
        .map(|(layout, w, h, px)| {
            let mut s = Scaler::new(
                *layout,
                YuvMatrix::BT601,
                *w,
                *h,
                spec.width,
                spec.height,
                spec.color,
            )
            .unwrap();
            let mut hwc = vec![0u8; s.output_len()];
            s.run(
                &Planes {
                    data: [px, &[], &[]],
                    stride: [px.len() / h, 0, 0],
                },
                &mut hwc,
            );
            let mut t = vec![0.0; spec.len()];
            normalize_into(&hwc, spec, &mut t);
            t
        })
        .collect()
}

/// One model's answers on every frame.
struct Answers {
    what: String,
    /// The submodels' threshold (None: the full model, judged by top-1 alone).
    threshold: Option<f32>,
    answers: Vec<Classification>,
}

/// The full model and every submodel of `set` on `engine`, on the frames.
fn answers(
    set: &Path,
    m: &Manifest,
    engine: &Engine,
    full_in: &[Vec<f32>],
    sub_in: &[Vec<Vec<f32>>],
) -> Vec<Answers> {
    let run = |model: cachenet_core::engine::Model, inputs: &[Vec<f32>]| {
        let mut out = Vec::new();
        inputs
            .iter()
            .map(|t| {
                model.run_into(t, &mut out).unwrap();
                Classification::from_logits(&out)
            })
            .collect::<Vec<_>>()
    };
    let mut all = vec![Answers {
        what: "full model".into(),
        threshold: None,
        answers: run(load_local_full(set, m, engine).unwrap(), full_in),
    }];
    for (k, s) in m.submodels.iter().enumerate() {
        let model = load_local_submodel(set, m, s.id, engine).unwrap();
        all.push(Answers {
            what: format!("submodel {}", s.id),
            threshold: Some(m.threshold),
            answers: run(model, &sub_in[k]),
        });
    }
    all
}

/// `got` against the reference: (top-1 agreement, hit agreement, max |dp|, max |dH|) over every
/// model, asserting the bounds.
fn compare(name: &str, set: &str, reference: &[Answers], got: &[Answers]) {
    for (r, g) in reference.iter().zip(got) {
        let n = r.answers.len();
        let (mut top1, mut hit, mut dp, mut dh) = (0usize, 0usize, 0f32, 0f32);
        for (a, b) in r.answers.iter().zip(&g.answers) {
            top1 += usize::from(a.class_id == b.class_id);
            if let Some(t) = r.threshold {
                hit += usize::from(a.is_hit(t) == b.is_hit(t));
            }
            for (x, y) in a.probabilities.iter().zip(&b.probabilities) {
                dp = dp.max((x - y).abs());
            }
            dh = dh.max((a.entropy - b.entropy).abs());
        }
        let share = |k: usize| k as f64 / n as f64;
        eprintln!(
            "{set}, {name}, {}: top-1 {:.2} %, hit/miss {}, max |dp| {dp:.2e}, max |dH| {dh:.2e} \
             ({n} frames)",
            r.what,
            100.0 * share(top1),
            r.threshold
                .map_or("-".into(), |_| format!("{:.2} %", 100.0 * share(hit))),
        );
        assert!(share(top1) >= 0.999, "{set} {name} {}: top-1", r.what);
        if r.threshold.is_some() {
            assert!(share(hit) >= 0.999, "{set} {name} {}: hit/miss", r.what);
        }
        assert!(dp <= 1e-4, "{set} {name} {}: probabilities {dp}", r.what);
        assert!(dh <= 1e-4, "{set} {name} {}: entropies {dh}", r.what);
    }
}

#[test]
fn every_backend_makes_the_same_decisions() {
    let sets = [
        (
            "fashion-mnist",
            data(
                "replay-grouped-1000",
                "python3 -m cachenet_train replay --order grouped --seed 0 --limit 1000 \
                 --out ../.data/replay-grouped-1000",
            ),
            1000,
        ),
        (
            "real-footage",
            data(
                "reference-vtest-check",
                "python3 -m cachenet_train reference --model-dir real-footage --segment 0.7 \
                 0.75 --clip vtest.avi --out ../.data/reference-vtest-check",
            ),
            40,
        ),
    ];
    let on = |backend| Engine {
        backend,
        threads: 1,
        ..Engine::default()
    };
    for (name, dir, limit) in sets {
        let set = repo().join("models").join(name);
        let m = Manifest::load(&set).unwrap();
        let frames = frames(&dir, limit);
        assert_eq!(frames.len(), limit, "{}", dir.display());
        let full_in = tensors(&frames, m.full_input());
        let sub_in: Vec<Vec<Vec<f32>>> = m
            .submodels
            .iter()
            .map(|s| tensors(&frames, m.submodel_input(s.id)))
            .collect();
        let reference = answers(&set, &m, &on(BackendChoice::Tract), &full_in, &sub_in);
        let got = answers(&set, &m, &on(BackendChoice::Auto), &full_in, &sub_in);
        compare("auto", name, &reference, &got);
        cachenet_core::cpu::set_avx512(false);
        let got = answers(&set, &m, &on(BackendChoice::Auto), &full_in, &sub_in);
        cachenet_core::cpu::set_avx512(true);
        compare("auto without AVX-512", name, &reference, &got);
        #[cfg(feature = "onnxruntime")]
        {
            let got = answers(&set, &m, &on(BackendChoice::OnnxRuntime), &full_in, &sub_in);
            compare("onnxruntime (cpu)", name, &reference, &got);
        }
    }
}
