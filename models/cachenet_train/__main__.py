"""CLI: python -m cachenet_train {fetch,fit,distill,replay,vectors,sweeps} ..."""
from __future__ import annotations

import argparse
import logging
import os
import sys


def _logging(path: str | None):
    handlers = [logging.StreamHandler(sys.stderr)]
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        handlers.append(logging.FileHandler(path))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", handlers=handlers,
                        force=True)


def cmd_fetch(a):
    from . import data
    for name in a.what:
        if name == "fashion-mnist":
            print(data.fetch_fashion_mnist())
        elif name == "cifar10-sample":
            print(data.fetch_foolbox_cifar10())
        elif name == "vtest":
            print(data.fetch_vtest())
        elif name == "footage":
            from . import footage
            for path in footage.fetch().values():
                print(path)
        else:
            sys.exit(f"unknown dataset {name!r} (fashion-mnist, cifar10-sample, vtest, footage)")


def cmd_fit(a):
    import numpy as np
    from . import data, export, report, train
    from .nets import ClassSectorSelector, Selector
    _logging(os.path.join(a.out, "train.log"))
    if a.dataset == "fashion-mnist" and not a.data_root:
        data.fetch_fashion_mnist()
    tr = data.load_dataset(a.dataset, "train", a.data_root)
    te = data.load_dataset(a.dataset, "test", a.data_root)
    cfg = train.Config(dataset=a.dataset, k=a.k, epochs_full=a.epochs_full, epochs=a.epochs, nu=a.nu,
                       batch=a.batch, limit=a.limit, test_limit=a.test_limit, seed=a.seed, threads=a.threads,
                       bf16=not a.fp32, tau=a.tau, gamma=a.gamma, selector=a.selector, ablation=not a.no_ablation,
                       full_widths=tuple(a.full_widths), full_blocks=a.full_blocks, sub_widths=tuple(a.sub_widths),
                       lr=a.lr, epochs_class=a.epochs_class, kd_weight=a.kd, kd_temp=a.kd_temp, dz=a.dz,
                       group_cap=a.group_cap)
    r = train.fit(cfg, tr, te, a.out)
    if a.train_only:
        logging.info("trained; --train-only: no export")
        return
    full, test = r["full"].float(), r["test"]
    shape = tuple(test.raw.shape[1:])
    kws = {"vae": {"vae": r["vae"]}, "class": {"angles": r["angles"]}}
    gens = {"vae": r["gen"], "class": r["class_gen"]}
    names = [n for n in ("vae", "class") if gens[n] is not None and (n == a.selector or cfg.ablation)]
    variants, camera, evs = {}, {}, {}
    if a.dataset == "fashion-mnist" and cfg.test_limit:
        te = te.subset(cfg.test_limit, cfg.seed)
    for n in names:
        evs[n] = report.evaluate(cfg, full, gens[n], test.x, test.y, **kws[n])
        variants[n] = report.variant_summary(evs[n], cfg.seed)
        cam_ev = report.camera_eval(cfg, full, gens[n], te, test, kws[n], cfg.seed)
        order = np.arange(len(cam_ev["y"]))
        camera[n] = dict(report.simulate(cam_ev, order, variants[n]["threshold"]),
                         full_accuracy=float((cam_ev["full_pred"] == cam_ev["y"]).mean()))
        logging.info("%s selector: %s; camera %s", n, {k2: variants[n][k2] for k2 in ("threshold", "grouped")},
                     camera[n])
    if a.eval_only:
        import json
        with open(os.path.join(a.out, "eval.json"), "w") as f:
            json.dump({"config": {k2: v for k2, v in vars(a).items() if not callable(v)}, "variants": variants,
                       "camera": camera, "groups": r.get("groups")}, f, indent=1)
        logging.info("--eval-only: wrote %s", os.path.join(a.out, "eval.json"))
        return
    chosen = a.selector
    threshold = a.threshold if a.threshold else variants[chosen]["threshold"]
    samples = test.x[:8].cpu().float().numpy()
    gen_net = gens[chosen].float()
    selector = ClassSectorSelector(r["angles"]) if chosen == "class" else Selector(r["vae"].float())
    diffs = export.export_all(a.out, a.name or os.path.basename(os.path.abspath(a.out)), a.version,
                              tr.classes, r["mean"], r["std"], shape, full.cpu(), selector.cpu(), gen_net.cpu(),
                              cfg, threshold, samples,
                              selector_input="probabilities" if chosen == "class" else "image")
    timings = {f: report.onnx_ms(os.path.join(a.out, f), shape)
               for f in ["full.onnx"] + [f"submodel-{k}.onnx" for k in range(cfg.k)]}
    summary = report.write_report(a.out, cfg, tr.classes, r["history"], variants, chosen, full, gen_net, shape,
                                  diffs, timings, camera,
                                  groups=[[tr.classes[c] for c in g] for g in r["groups"]] if r.get("groups") else None)
    logging.info("full accuracy %.4f; CacheNet grouped replay at T=%s: accuracy %.4f hit rate %.4f",
                 summary["full_accuracy"], summary["threshold"], summary["grouped"]["accuracy"],
                 summary["grouped"]["hit_rate"])


def _wxh(text):
    try:
        w, h = (int(v) for v in text.lower().split("x"))
        return w, h
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT") from None


def _footage_path(name):
    """A path as given, or the name of a clip the project knows how to fetch."""
    from . import footage
    if os.path.exists(name):
        return name
    if name in footage.SOURCES:
        return footage.fetch([name])[name]
    sys.exit(f"--footage {name!r}: no such file or folder (known clips: {', '.join(footage.TRAIN_CLIPS + footage.UNSEEN_CLIPS)})")


def cmd_distill(a):
    from . import distill, footage
    _logging(os.path.join(a.out, "distill.log"))
    os.makedirs(a.out, exist_ok=True)
    if a.regions and a.detector:
        sys.exit("--regions and --detector: give one or the other")
    cache = a.cache or distill.cache_dir(a.out)
    if a.teacher == "efficientnet-lite0":
        teacher = distill.builtin_teacher(cache)
    else:
        if not (a.teacher_input and a.labels):
            sys.exit("--teacher FILE.onnx needs --teacher-input WxH and --labels FILE")
        if not os.path.isfile(a.teacher):
            sys.exit(f"--teacher {a.teacher!r}: no such file (or use the built-in efficientnet-lite0)")
        mean = a.teacher_mean or [0.0, 0.0, 0.0]
        std = a.teacher_std or [1.0, 1.0, 1.0]
        teacher = distill.Teacher(a.teacher, a.teacher_input[0], a.teacher_input[1], mean, std,
                                  distill.read_labels(a.labels))
    cfg = distill.Config(k=a.k, student_input=a.student_input, student_blocks=a.student_blocks,
                         student_init=a.student_init, epochs=a.epochs, every=a.every, views=a.views,
                         train_fraction=a.train_fraction, seed=a.seed, threads=a.threads,
                         temperature=a.temperature, agreement_target=a.agreement_target,
                         min_frames=a.min_frames, ablation=not a.no_ablation, vae_input=a.vae_input,
                         vae_epochs=a.vae_epochs)
    clips = []
    sources = [(n, False) for n in a.footage] + [(n, True) for n in a.unseen or []]
    if a.regions and len(a.regions) != len(sources):
        sys.exit(f"--regions: one CSV (or -) per clip of --footage and --unseen: {len(sources)} clips, "
                 f"{len(a.regions)} given")
    for i, (n, held_out) in enumerate(sources):
        path = _footage_path(n)
        frames = -(-footage.count_frames(path) // cfg.every)
        end = 0 if held_out else footage.split(frames, cfg.train_fraction)
        name = os.path.basename(path.rstrip("/"))
        regions = a.regions[i] if a.regions else "-"
        if a.detector:
            try:
                regions = distill.detect_regions(path, a.detector, a.detector_field, cache)
            except (OSError, ValueError) as e:
                sys.exit(f"--detector: {e}")
        if regions == "-":
            clips.append(distill.Clip(name, path, frames, end, unseen=held_out))
            continue
        if cfg.every != 1:
            sys.exit("--regions needs --every 1 (the CSV numbers every frame)")
        try:
            clips += distill.object_clips(name, path, regions, frames, None if held_out else end)
        except (OSError, ValueError) as e:
            sys.exit(f"--regions: {e}")
    r = distill.distill(cfg, teacher, clips, a.out, a.name or os.path.basename(os.path.abspath(a.out)), a.version,
                        cache)
    logging.info("wrote %s: threshold %.2f, %s", a.out, r["threshold"],
                 {k: {m: r["figures"][k][m] for m in ("hit_rate", "agreement")} for k in ("later", "unseen")
                  if k in r["figures"]})


def cmd_resolution(a):
    from . import footage
    r = footage.resolution_check([_footage_path(c) for c in a.clip], a.model_dir, a.sizes, *a.segment)
    print(f"{r['frames']} frames: the full model's top-1 at its own input is kept by")
    for s, v in r["agreement"].items():
        print(f"  {s}x{s} (scaled back up): {100 * v:.1f} %" if v is not None else f"  {s}x{s}: no frames")


def cmd_reference(a):
    from . import footage
    start, end = a.segment
    print(footage.write_reference([_footage_path(c) for c in a.clip], a.model_dir, a.out, start, end))


def cmd_replay(a):
    from . import data, replay
    if a.dataset == "fashion-mnist" and not a.data_root:
        data.fetch_fashion_mnist()
    ds = data.load_dataset(a.dataset, a.split, a.data_root)
    if a.order == "camera":
        n = max(1, a.limit // (5 * len(ds.classes))) if a.limit else 40
        print(replay.write_camera_frames(ds.images, ds.labels, ds.classes, a.out, items_per_class=n, seed=a.seed))
        return
    idx = replay.sequence(ds.labels, a.order, a.seed)
    if a.limit:
        idx = idx[:a.limit] if a.order != "grouped" else _spread(ds.labels, idx, a.limit)
    print(replay.write_frames(ds.images, ds.labels, ds.classes, idx, a.out))


def _spread(labels, idx, limit):
    """First limit/C frames of every label group, keeping the grouped order."""
    import numpy as np
    classes = np.unique(labels)
    per = max(1, limit // len(classes))
    return np.concatenate([idx[labels[idx] == c][:per] for c in classes])


def cmd_sweeps(a):
    from . import report
    text = report.sweep_table(a.evals)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    print(text, end="")


def cmd_vectors(a):
    import json
    from . import export, maths
    sigma = a.sigma if a.sigma else maths.sigma_eq13(a.k, a.gamma, a.tau)
    with open(a.out, "w") as f:
        json.dump(export.selector_vectors(a.k, sigma, a.tau, a.gamma), f, indent=1)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m cachenet_train", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="fetch datasets into $CACHENET_DATA (~/.cache/cachenet/data)")
    f.add_argument("what", nargs="+", help="fashion-mnist, cifar10-sample, vtest")
    f.set_defaults(fn=cmd_fetch)
    f = sub.add_parser("fit", help="train the full model and CacheNet, export ONNX + manifest + report")
    f.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "cifar10", "folder"])
    f.add_argument("--data-root")
    f.add_argument("--k", type=int, default=4)
    f.add_argument("--out", required=True)
    f.add_argument("--name")
    f.add_argument("--version", default="1.0.0")
    f.add_argument("--epochs-full", type=int, default=10)
    f.add_argument("--epochs", type=int, default=10)
    f.add_argument("--epochs-class", type=int, default=0,
                   help="epochs of the class-consistent generator (0: as --epochs)")
    f.add_argument("--nu", type=int, default=5)
    f.add_argument("--batch", type=int, default=128)
    f.add_argument("--tau", type=float, default=0.3)
    f.add_argument("--gamma", type=float, default=0.3)
    f.add_argument("--threshold", type=float, default=0.0, help="default entropy threshold (0: from the sweep)")
    f.add_argument("--limit", type=int, default=0, help="train on this many images (smoke runs)")
    f.add_argument("--test-limit", type=int, default=0)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--threads", type=int, default=0)
    f.add_argument("--fp32", action="store_true", help="disable bf16 autocast")
    f.add_argument("--lr", type=float, default=0.1)
    f.add_argument("--selector", default="class", choices=["class", "vae"],
                   help="class: class-consistent sectors (default); vae: the paper's S-InfoVAE selector")
    f.add_argument("--no-ablation", action="store_true", help="train only the chosen selector's generator")
    f.add_argument("--full-widths", type=int, nargs=3, default=[80, 160, 320])
    f.add_argument("--full-blocks", type=int, default=2)
    f.add_argument("--sub-widths", type=int, nargs=3, default=[24, 48, 96])
    f.add_argument("--kd", type=float, default=0.0,
                   help="class selector: weight of distillation from the full model into the submodels")
    f.add_argument("--kd-temp", type=float, default=2.0)
    f.add_argument("--train-only", action="store_true", help="stop after training (checkpoints only)")
    f.add_argument("--eval-only", action="store_true",
                   help="train and evaluate (eval.json: sweeps, partitions, camera replay), no export")
    f.add_argument("--dz", type=int, default=32, help="S-InfoVAE stage-1 latent size")
    f.add_argument("--group-cap", type=int, default=0,
                   help="class selector: most classes per sector group (0: ceil(2N/K))")
    f.set_defaults(fn=cmd_fit)
    f = sub.add_parser("distill", help="distil a model set from a teacher classifier and unlabeled footage")
    f.add_argument("--teacher", default="efficientnet-lite0",
                   help="an ONNX classifier (logits out), or the built-in efficientnet-lite0 (ImageNet-1k)")
    f.add_argument("--teacher-input", type=_wxh, help="the teacher's input size, WIDTHxHEIGHT (RGB, NCHW)")
    f.add_argument("--teacher-mean", type=float, nargs=3, help="per-channel mean after x/255 (default 0)")
    f.add_argument("--teacher-std", type=float, nargs=3, help="per-channel std after x/255 (default 1)")
    f.add_argument("--labels", help="class names, one a line, in the teacher's output order")
    f.add_argument("--footage", nargs="+", required=True,
                   help="video files or image folders: the first --train-fraction of each trains, the rest "
                        "is held out (or a known clip name, fetched: vtest.avi, box.mp4, ...)")
    f.add_argument("--unseen", nargs="*", help="footage only ever evaluated on (scenes the set never meets)")
    f.add_argument("--regions", nargs="+",
                   help="per-object crops (secondary classifiers): one CSV of frame,x,y,width,height[,id] per clip "
                        "of --footage then --unseen, or - for whole frames; each object is its own sequence")
    f.add_argument("--detector",
                   help="per-object crops from a detector run through GStreamer on each video clip, in "
                        "gst-launch syntax (e.g. \"facedetect min-size-width=24 min-size-height=24\"): "
                        "filesrc ! decodebin ! videoconvert ! DETECTOR ! fakesink; the k-th region of a "
                        "frame is object k; cached beside the teacher's posteriors")
    f.add_argument("--detector-field", default="faces",
                   help="the field of the detector's per-frame message that lists the objects (x, y, "
                        "width, height)")
    f.add_argument("--train-fraction", type=float, default=0.7)
    f.add_argument("--k", type=int, default=4)
    f.add_argument("--every", type=int, default=1, help="use every n-th frame")
    f.add_argument("--min-frames", type=int, default=3,
                   help="a class joins the vocabulary when the teacher names it on this many training frames")
    f.add_argument("--views", type=int, default=4, help="training views per frame (plain, mirrored, crops)")
    f.add_argument("--student-input", type=int, default=112, help="the specialists' input side")
    f.add_argument("--student-blocks", type=int, default=5, help="EfficientNet-Lite0 blocks in each specialist")
    f.add_argument("--student-init", default="lite0", choices=["lite0", "scratch"],
                   help="lite0: ImageNet weights (fetched); scratch: random (smoke runs)")
    f.add_argument("--temperature", type=float, default=0.5)
    f.add_argument("--agreement-target", type=float, default=0.9,
                   help="the threshold keeps agreement with the teacher (all frames) at least this on validation")
    f.add_argument("--epochs", type=int, default=30)
    f.add_argument("--no-ablation", action="store_true",
                   help="skip the S-InfoVAE selector ablation (the report's second table)")
    f.add_argument("--vae-input", type=int, default=32, help="the ablation's S-InfoVAE input side")
    f.add_argument("--vae-epochs", type=int, default=60)
    f.add_argument("--cache", help="teacher posteriors and features, reused by a rerun "
                                   "(default $CACHENET_DATA/distill-cache/<out's name>)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--threads", type=int, default=0)
    f.add_argument("--out", required=True)
    f.add_argument("--name")
    f.add_argument("--version", default="1.0.0")
    f.set_defaults(fn=cmd_distill)
    f = sub.add_parser("reference", help="a clip's frames as PNG + labels.csv with the set's full model's answers")
    f.add_argument("--clip", required=True, nargs="+",
                   help="video files, image folders or known clip names (one after the other)")
    f.add_argument("--model-dir", required=True, help="the model set whose full model is the reference")
    f.add_argument("--segment", type=float, nargs=2, default=[0.0, 1.0], metavar=("START", "END"),
                   help="fractions of the clip (0.7 1.0: the held-out end of a training clip)")
    f.add_argument("--out", required=True)
    f.set_defaults(fn=cmd_reference)
    f = sub.add_parser("resolution", help="how often the full model keeps its answer when a frame is seen at "
                                          "a specialist's smaller input (a guide to --student-input)")
    f.add_argument("--clip", required=True, nargs="+", help="video files, image folders or known clip names")
    f.add_argument("--model-dir", required=True)
    f.add_argument("--sizes", type=int, nargs="+", default=[96, 112, 160])
    f.add_argument("--segment", type=float, nargs=2, default=[0.0, 1.0], metavar=("START", "END"))
    f.set_defaults(fn=cmd_resolution)
    f = sub.add_parser("replay", help="write a replay sequence as PNG frames + labels.csv")
    f.add_argument("--dataset", default="fashion-mnist")
    f.add_argument("--data-root")
    f.add_argument("--split", default="test")
    f.add_argument("--order", default="grouped", choices=["grouped", "segments", "shuffled", "camera"])
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--limit", type=int, default=0)
    f.add_argument("--out", required=True)
    f.set_defaults(fn=cmd_replay)
    f = sub.add_parser("vectors", help="selector test vectors for given K, tau, gamma")
    f.add_argument("--k", type=int, required=True)
    f.add_argument("--tau", type=float, default=0.3)
    f.add_argument("--gamma", type=float, default=0.3)
    f.add_argument("--sigma", type=float, default=0.0)
    f.add_argument("--out", required=True)
    f.set_defaults(fn=cmd_vectors)
    f = sub.add_parser("sweeps", help="markdown table of fit --eval-only results (eval.json files)")
    f.add_argument("evals", nargs="+")
    f.add_argument("--out")
    f.set_defaults(fn=cmd_sweeps)
    a = p.parse_args(argv)
    a.fn(a)


if __name__ == "__main__":
    main()
