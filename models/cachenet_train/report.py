"""Evaluation, the simulated CacheNet replay (threshold sweep) and report.md with PNG plots."""
from __future__ import annotations

import json
import os

import numpy as np
import torch

from . import maths
from .nets import ClassSectorSelector, Selector, count_flops, count_params
from .replay import sequence
from .train import predict


@torch.no_grad()
def evaluate(cfg, full, gen_net, x: torch.Tensor, y, vae=None, angles=None) -> dict:
    """Per-image outputs of every model on normalised images x, as numpy arrays. The selector is
    the paper's (vae) or the class-consistent one (angles)."""
    full_logits = predict(full, x, cfg)
    if angles is not None:
        points = torch.softmax(full_logits, 1) @ ClassSectorSelector(angles).table.to(full_logits.device)
    else:
        points = predict(Selector(vae), x, cfg)
    theta = maths.noisy_angle_eq10(maths.angle_eq9(points.double()))
    codes = maths.soft_code_eq12(theta, cfg.k, cfg.sigma)
    sub_logits = torch.stack([predict(gen_net.submodel(k), x, cfg) for k in range(cfg.k)])
    return {
        "y": y.cpu().numpy() if torch.is_tensor(y) else np.asarray(y),
        "full_pred": full_logits.argmax(1).cpu().numpy(),
        "full_ent": maths.entropy_eq14(full_logits).cpu().numpy(),
        "selected": codes.argmax(1).cpu().numpy(),
        "sub_pred": sub_logits.argmax(2).cpu().numpy(),          # [K, N]
        "sub_ent": maths.entropy_eq14(sub_logits).cpu().numpy(),  # [K, N]
    }


def simulate(ev: dict, order: np.ndarray, threshold: float) -> dict:
    """CacheNet with one cached submodel on the frames `order`: hit iff H < T; a miss takes the
    full model's answer and swaps in the selected submodel."""
    active = None
    hits = correct = swaps = agree = 0
    for i in order:
        if active is not None and ev["sub_ent"][active, i] < threshold:
            hits += 1
            pred = ev["sub_pred"][active, i]
        else:
            pred = ev["full_pred"][i]
            sel = int(ev["selected"][i])
            if sel != active:
                swaps += 1
            active = sel
        correct += int(pred == ev["y"][i])
        agree += int(pred == ev["full_pred"][i])
    n = len(order)
    return {"threshold": float(threshold), "hit_rate": hits / n, "accuracy": correct / n,
            "agreement": agree / n, "swaps": swaps, "swaps_per_10k": swaps * 10000.0 / n}


THRESHOLDS = [0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.05, 1.1, 1.15, 1.2, 1.25, 1.3,
              1.4, 1.5, 1.75, 2.0]


def sweep(ev: dict, order: np.ndarray, thresholds=None) -> list[dict]:
    return [simulate(ev, order, t) for t in (thresholds or THRESHOLDS)]


def choose_threshold(rows: list[dict], full_acc: float, max_drop: float = 0.005, min_hit: float = 0.95) -> dict:
    """The largest hit rate whose accuracy is within max_drop of the full model; if none is within
    max_drop, the most accurate row."""
    ok = [r for r in rows if r["accuracy"] >= full_acc - max_drop]
    if ok:
        return max(ok, key=lambda r: (r["hit_rate"], r["accuracy"]))
    return max(rows, key=lambda r: r["accuracy"])


def onnx_ms(path: str, shape, runs: int = 200) -> float:
    """Median onnxruntime time (1 thread) of one run of an exported model, in ms."""
    import time
    import onnxruntime as ort
    o = ort.SessionOptions()
    o.intra_op_num_threads = 1
    o.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
    for _ in range(10):
        sess.run(None, {"input": x})
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, {"input": x})
        ts.append(time.perf_counter() - t)
    return float(np.median(ts) * 1000)


def variant_summary(ev: dict, seed: int) -> dict:
    """Sweeps on the grouped and the random-run replay, the chosen threshold and its results."""
    y = ev["y"]
    full_acc = float((ev["full_pred"] == y).mean())
    grouped = sweep(ev, sequence(y, "grouped", seed))
    segments = sweep(ev, sequence(y, "segments", seed, mean_segment=25))
    best = choose_threshold(grouped, full_acc)
    t = best["threshold"]
    k = ev["sub_pred"].shape[0]
    routed = float((ev["sub_pred"][ev["selected"], np.arange(len(y))] == y).mean())
    part = []
    for j in range(k):
        m = ev["selected"] == j
        part.append({"frames": int(m.sum()),
                     "submodel_accuracy": float((ev["sub_pred"][j, m] == y[m]).mean()) if m.any() else 0.0,
                     "full_accuracy": float((ev["full_pred"][m] == y[m]).mean()) if m.any() else 0.0,
                     "hit_share_at_T": float((ev["sub_ent"][j, m] < t).mean()) if m.any() else 0.0})
    return {"full_accuracy": full_acc, "threshold": t, "grouped": best,
            "segments": next(r for r in segments if r["threshold"] == t),
            "shuffled": simulate(ev, sequence(y, "shuffled", seed), t),
            "sweep_grouped": grouped, "sweep_segments": segments, "routed_accuracy": routed,
            "partitions": part,
            "class_counts": np.stack([np.bincount(y[ev["selected"] == j], minlength=int(y.max()) + 1)
                                      for j in range(k)]).tolist()}


def camera_eval(cfg, full, gen_net, test_ds, train_t, variant_kw, seed: int) -> dict:
    """Accuracy and hit rate on the camera-like replay (320x240 frames, area-averaged to the
    model input as the element does) at the variant's threshold set by the caller."""
    from .replay import area_resize, camera_frames
    c, h, w = train_t.raw.shape[1:]
    frames, ys = [], []
    for fr, lab, _ in camera_frames(test_ds.images, test_ds.labels, seed=seed):
        frames.append(area_resize(fr, w, h)); ys.append(lab)
    raw = torch.from_numpy(np.stack(frames)[:, None].astype(np.float32) / 255.0).to(train_t.raw.device)
    ev = evaluate(cfg, full, gen_net, train_t.norm(raw), np.asarray(ys), **variant_kw)
    return ev


def _pct(v):
    return f"{v * 100:.2f} %"


def write_report(out: str, cfg, classes, history, variants: dict, chosen: str, full, gen_net, shape,
                 diffs, timings: dict, camera: dict, groups=None) -> dict:
    """report.md, report.json and the plots. variants: name -> variant_summary; camera: name ->
    simulate() at that variant's threshold on the camera-like replay (+ full accuracy)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    v = variants[chosen]
    k = cfg.k
    flops_full = count_flops(full, shape)
    flops_sub = count_flops(gen_net.submodel(0), shape)
    full_acc = v["full_accuracy"]
    g, sgm = v["grouped"], v["segments"]
    targets = [
        ("full model accuracy", ">= 95 %", _pct(full_acc), full_acc >= 0.95),
        ("grouped: accuracy within 0.5 pt of full", f">= {_pct(full_acc - 0.005)}", _pct(g["accuracy"]),
         g["accuracy"] >= full_acc - 0.005),
        ("grouped: hit rate", ">= 95 %", _pct(g["hit_rate"]), g["hit_rate"] >= 0.95),
        ("grouped: submodel changes per 10k frames", "<= 200", f"{g['swaps_per_10k']:.0f}", g["swaps_per_10k"] <= 200),
        ("random-length runs (mean 25): hit rate", ">= 90 %", _pct(sgm["hit_rate"]), sgm["hit_rate"] >= 0.90),
        ("submodel MACs / full MACs", "<= 1/8", f"1/{flops_full / flops_sub:.1f}", flops_sub * 8 <= flops_full),
    ]
    summary = {
        "chosen_selector": chosen, "full_accuracy": full_acc, "threshold": v["threshold"],
        "grouped": g, "segments": sgm, "variants": variants, "camera": camera,
        "flops_full": flops_full, "flops_submodel": flops_sub,
        "params_full": count_params(full), "params_submodel": count_params(gen_net.submodel(0)),
        "onnxruntime_ms": timings, "onnx_max_abs_diff": diffs,
        "targets": [{"what": a, "target": b, "result": c, "met": bool(d)} for a, b, c, d in targets],
        "config": {k2: v2 for k2, v2 in vars(cfg).items() if k2 != "extra"},
    }
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(summary, f, indent=1, default=str)

    counts = np.asarray(v["class_counts"])
    fig, axes = plt.subplots(1, k, figsize=(3 * k, 3), sharey=True)
    for j, ax in enumerate(np.atleast_1d(axes)):
        ax.bar(range(len(classes)), counts[j])
        ax.set_title(f"submodel {j}")
        ax.set_xticks(range(len(classes)))
        ax.set_xticklabels(classes, rotation=90, fontsize=6)
    fig.suptitle(f"Test images per selected submodel and class ({chosen} selector)")
    fig.tight_layout(); fig.savefig(os.path.join(out, "partitions.png"), dpi=110); plt.close(fig)

    fig, a1 = plt.subplots(figsize=(5.5, 3.2))
    hf = history.get("full", [])
    if hf:
        a1.plot([h["epoch"] for h in hf], [h["loss"] for h in hf], "o-", label="full CE")
        a1.plot([h["epoch"] for h in hf], [h["test_acc"] for h in hf], "s--", label="full test acc")
    for key, lab in (("cachenet", "J_F paper"), ("class", "J_F class")):
        hc = history.get(key, [])
        if hc:
            a1.plot([h["epoch"] for h in hc], [h["J_F"] for h in hc], "o-", label=lab)
    a1.set_xlabel("epoch"); a1.legend(fontsize=7); a1.set_yscale("log")
    fig.suptitle("Losses per epoch"); fig.tight_layout()
    fig.savefig(os.path.join(out, "losses.png"), dpi=110); plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, vv in variants.items():
        for seq, st in (("sweep_grouped", "-"), ("sweep_segments", ":")):
            rows = vv[seq]
            ax.plot([r["threshold"] for r in rows], [r["hit_rate"] for r in rows], "o" + st,
                    label=f"{name} {seq[6:]} hit rate", ms=3)
        ax.plot([r["threshold"] for r in vv["sweep_grouped"]], [r["accuracy"] for r in vv["sweep_grouped"]],
                "s--", ms=3, label=f"{name} grouped accuracy")
    ax.axhline(full_acc, color="gray", ls="--", label="full model accuracy")
    ax.set_xscale("log"); ax.set_xlabel("entropy threshold T (nats)"); ax.legend(fontsize=6)
    ax.set_title("Hit rate and accuracy vs threshold")
    fig.tight_layout(); fig.savefig(os.path.join(out, "threshold.png"), dpi=110); plt.close(fig)

    L = [f"# CacheNet model set `{os.path.basename(os.path.abspath(out))}`", "",
         f"Dataset {cfg.dataset}, K = {k} submodels, tau = {cfg.tau}, gamma = {cfg.gamma}, "
         f"sigma = {cfg.sigma:.4f} (eq 13), nu = {cfg.nu}, {cfg.epochs_full} full-model epochs, "
         f"{cfg.epochs} CacheNet epochs (paper generator), {cfg.epochs_class or cfg.epochs} epochs "
         f"(class-consistent generator), selector shipped: **{chosen}**. Full model: ResNet "
         f"widths {tuple(cfg.full_widths)}, {cfg.full_blocks} blocks per stage; submodels: shared stem + "
         f"stage 1 and one branch each, widths {tuple(cfg.sub_widths)}.", "",
         "## Targets", "", "| target | wanted | result | |", "|---|---|---|---|"]
    L += [f"| {a} | {b} | {c} | {'met' if d else '**missed**'} |" for a, b, c, d in targets]
    L += ["", f"All at T = {v['threshold']} nats, one cached submodel, simulated on the test set "
          f"(10 000 frames) with the exported models' PyTorch twins.", "",
          "## Ablation: the paper's selector and the class-consistent extension", "",
          "`vae` is the paper's method: the S-InfoVAE's 2-D point of the image, its angle, K sectors "
          "(eqs 9-12), partitions by eq 16, generator trained by Algorithm 1. `class` keeps eqs 9-16 "
          "and the sectors but makes them consistent over a class: the classes are grouped into K "
          "sectors by the full model's confusions, each class gets a point inside its sector, the "
          "edge's selector maps the full model's class posterior onto those points, and each submodel "
          "learns its partition and answers frames outside it with a flat posterior (so that they "
          "miss). Its generator starts from the paper generator's weights.", "",
          f"Class groups (one per sector): {groups}" if groups else "", "",
          "| selector | T | grouped accuracy | grouped hit rate | changes / 10k | random runs hit rate | "
          "shuffled hit rate | routed accuracy (no threshold) |", "|---|---|---|---|---|---|---|---|"]
    for name, vv in variants.items():
        L.append(f"| {name} | {vv['threshold']} | {_pct(vv['grouped']['accuracy'])} | "
                 f"{_pct(vv['grouped']['hit_rate'])} | {vv['grouped']['swaps_per_10k']:.0f} | "
                 f"{_pct(vv['segments']['hit_rate'])} | {_pct(vv['shuffled']['hit_rate'])} | "
                 f"{_pct(vv['routed_accuracy'])} |")
    ok = [r for r in v["sweep_grouped"] if r["accuracy"] >= full_acc - 0.005]
    at95 = [r for r in v["sweep_grouped"] if r["hit_rate"] >= 0.95]
    hc = history.get("class" if chosen == "class" else "cachenet", [])
    L += ["", "## What limits the hit rate", "",
          f"- Accuracy against hits: within 0.5 pt of the full model the best hit rate is "
          f"{_pct(max(r['hit_rate'] for r in ok)) if ok else 'none'}; " +
          (f"the first threshold with >= 95 % hits (T = {at95[0]['threshold']}) costs "
           f"{(full_acc - at95[0]['accuracy']) * 100:.2f} pt." if at95 else "no threshold reaches 95 % hits."),
          "- Submodel capacity against the classes a sector holds (frames the selector sends to each "
          "submodel; share of them under the threshold; accuracy of the submodel and of the full "
          "model on them):", "",
          "| submodel | frames | under T | submodel accuracy | full model accuracy |", "|---|---|---|---|---|"]
    L += [f"| {j} | {p['frames']} | {_pct(p['hit_share_at_T'])} | {_pct(p['submodel_accuracy'])} | "
          f"{_pct(p['full_accuracy'])} |" for j, p in enumerate(v["partitions"])]
    L += ["",
          f"- Schedule: the shipped generator ran {len(hc)} epochs (J_F {hc[0]['J_F']:.3f} -> "
          f"{hc[-1]['J_F']:.3f}); the full model {cfg.epochs_full} epochs "
          f"({_pct(hf[-1]['test_acc']) if hf else '?'} at the end)." if hc else "- Schedule: see Training.",
          "- The paper's selector (ablation above) sends the frames of one class to several sectors, "
          "so a cached submodel keeps meeting frames it was not trained for: its changes per 10k "
          "frames and its hit rate on shuffled frames show it. The class-consistent selector removes "
          "those changes; what remains is the submodels' own uncertainty on the classes they hold.",
          ""]
    L += ["", "## Camera-like replay", "",
          "Test items rendered at 45-80 % of a 320x240 frame, drifting over a textured background of "
          "a random level (10-130 of 255), brightness 0.7-1.1, sensor noise (sigma 3), 40 items per class "
          "for 5 frames each, grouped by class (2000 frames), area-averaged to 28x28 as the element does "
          "(`python3 -m cachenet_train replay --order camera` writes them as PNG frames).", "",
          "| selector | full model accuracy | CacheNet accuracy | hit rate | changes / 10k |", "|---|---|---|---|---|"]
    for name, cam in camera.items():
        L.append(f"| {name} | {_pct(cam['full_accuracy'])} | {_pct(cam['accuracy'])} | {_pct(cam['hit_rate'])} | "
                 f"{cam['swaps_per_10k']:.0f} |")
    L += ["", "## Cost", "", "| model | MACs per frame | parameters | onnxruntime, 1 thread (ms) |", "|---|---|---|---|",
          f"| full | {flops_full:,} | {summary['params_full']:,} | {timings.get('full.onnx', float('nan')):.3f} |"]
    for j in range(k):
        L.append(f"| submodel {j} | {flops_sub:,} (1/{flops_full / flops_sub:.1f}) | "
                 f"{summary['params_submodel']:,} | {timings.get(f'submodel-{j}.onnx', float('nan')):.3f} |")
    L += ["", "## Which classes each submodel covers", "",
          "Test images the shipped selector sends to each submodel, by true class:", "",
          "| submodel | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes)]
    L += [f"| {j} | " + " | ".join(str(int(c)) for c in counts[j]) + " |" for j in range(k)]
    L += ["", "![partitions](partitions.png)", ""]
    for name, vv in variants.items():
        for seq, title in (("sweep_grouped", "grouped replay"), ("sweep_segments", "random-length runs, mean 25")):
            L += [f"## Threshold sweep: {name} selector, {title}", "",
                  "| T (nats) | hit rate | accuracy | agreement with full | changes / 10k |", "|---|---|---|---|---|"]
            L += [f"| {r['threshold']} | {_pct(r['hit_rate'])} | {_pct(r['accuracy'])} | {_pct(r['agreement'])} | "
                  f"{r['swaps_per_10k']:.0f} |" for r in vv[seq]]
            L += [""]
    L += ["![threshold](threshold.png)", "", "## Training", "", "![losses](losses.png)", ""]
    if hf:
        L += ["| full epoch | loss | test acc | seconds |", "|---|---|---|---|"]
        L += [f"| {h['epoch']} | {h['loss']:.4f} | {_pct(h['test_acc'])} | {h['seconds']:.0f} |" for h in hf]
        L += [""]
    for key in ("cachenet", "class"):
        hc = history.get(key, [])
        if hc:
            L += [f"| {key} epoch | J | J_F | samples per submodel | seconds |", "|---|---|---|---|---|"]
            L += [f"| {h['epoch']} | {h['J']:.3f} | {h['J_F']:.3f} | {[int(c) for c in h['samples_per_submodel']]} | "
                  f"{h['seconds']:.0f} |" for h in hc]
            L += [""]
    L += ["ONNX files agree with PyTorch (max abs diff): " + ", ".join(f"{n} {d:.1e}" for n, d in diffs.items()), ""]
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write("\n".join(L))
    return summary


def sweep_table(paths: list[str]) -> str:
    """Markdown table of `fit --eval-only` results (eval.json files): one row per variant and
    selector, at each variant's chosen threshold (best hit rate within 0.5 pt of the full
    model on the grouped replay)."""
    keys = ["sub_widths", "kd", "epochs_class", "group_cap", "tau", "gamma", "nu", "dz"]
    rows = ["| variant | selector | changed settings | T | grouped hit rate | grouped accuracy (full) "
            "| changes / 10k | random-run hit rate | submodel frames under T | camera hit rate / accuracy |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    base = {"sub_widths": [32, 64, 128], "kd": 2.0, "epochs_class": 24, "group_cap": 0, "tau": 0.3,
            "gamma": 0.3, "nu": 5, "dz": 32}
    for p in paths:
        with open(p) as f:
            d = json.load(f)
        name = os.path.splitext(os.path.basename(p))[0]
        cfg = d["config"]
        changed = ", ".join(f"{k} {cfg[k]}" for k in keys if k in cfg and cfg[k] != base[k]
                            and not (k == "kd" and cfg.get("selector") == "vae")) or "-"
        for sel, v in d["variants"].items():
            g, seg, cam = v["grouped"], v["segments"], d["camera"][sel]
            under = " / ".join(f"{p_['hit_share_at_T'] * 100:.1f}" for p_ in v["partitions"])
            rows.append(f"| {name} | {sel} | {changed} | {v['threshold']} | {_pct(g['hit_rate'])} | "
                        f"{_pct(g['accuracy'])} ({_pct(v['full_accuracy'])}) | {g['swaps_per_10k']:.0f} | "
                        f"{_pct(seg['hit_rate'])} | {under} % | {_pct(cam['hit_rate'])} / {_pct(cam['accuracy'])} |")
    return "\n".join(rows) + "\n"
