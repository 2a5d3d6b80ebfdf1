"""Export to ONNX (full, selector, K standalone submodels), check every file, write the
manifest the edge server reads and the selector test vectors the Rust tests replay."""
from __future__ import annotations

import hashlib
import json
import math
import os

import numpy as np
import torch

from . import maths


def _export(model: torch.nn.Module, shape, path: str) -> None:
    model = model.eval().float()
    x = torch.zeros(1, *shape)
    torch.onnx.export(model, (x,), path, dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["output"])


def check_onnx(model: torch.nn.Module, path: str, samples: np.ndarray, tol: float = 1e-4) -> float:
    """onnx checker + max abs diff between onnxruntime and PyTorch on real samples."""
    import onnx
    import onnxruntime as ort
    onnx.checker.check_model(onnx.load(path))
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    worst = 0.0
    model = model.eval().float()
    with torch.no_grad():
        for s in samples:
            x = s[None].astype(np.float32)
            ref = model(torch.from_numpy(x)).numpy()
            got = sess.run(None, {"input": x})[0]
            worst = max(worst, float(np.abs(ref - got).max()))
    if worst > tol:
        raise AssertionError(f"{path}: onnxruntime differs from PyTorch by {worst:.2e} > {tol}")
    return worst


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def file_entry(out: str, name: str) -> dict:
    p = os.path.join(out, name)
    return {"file": name, "sha256": sha256(p), "size": os.path.getsize(p)}


def selector_vectors(k: int, sigma: float, tau: float, gamma: float, points=None, seed: int = 0) -> dict:
    """2-D points -> angle -> soft codes -> submodel, computed by the training maths."""
    edge = [[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [1.0, 1.0], [-1.0, 1.0],
            [-1.0, -1.0], [1.0, -1.0], [1e-7, -1.0], [-3.0, 1e-9], [2.5, -0.3]]
    rng = np.random.default_rng(seed)
    pts = edge + rng.normal(0, 2, (40, 2)).tolist() + ([] if points is None else list(points))
    z = torch.tensor(pts, dtype=torch.float64)
    theta = maths.noisy_angle_eq10(maths.angle_eq9(z))
    codes = maths.soft_code_eq12(theta, k, sigma)
    cases = [{"z": [float(a), float(b)], "theta": float(t), "codes": [float(c) for c in cs],
              "submodel": int(cs.argmax())} for (a, b), t, cs in zip(pts, theta, codes)]
    return {"k": k, "sigma": sigma, "tau": tau, "gamma": gamma, "sigma_eq13": maths.sigma_eq13(k, gamma, tau),
            "cases": cases}


def export_all(out: str, name: str, version: str, classes, mean, std, shape, full, selector, gen_net, cfg,
               threshold: float, samples: np.ndarray, selector_input: str = "image") -> dict:
    """selector_input: "image" (the paper's selector takes the frame) or "probabilities" (the
    class-consistent selector takes the full model's posterior as 1xNx1x1)."""
    os.makedirs(out, exist_ok=True)
    diffs = {}
    _export(full, shape, os.path.join(out, "full.onnx"))
    diffs["full.onnx"] = check_onnx(full, os.path.join(out, "full.onnx"), samples, tol=2e-4)
    sel_shape, sel_samples = shape, samples
    if selector_input == "probabilities":
        sel_shape = (len(classes), 1, 1)
        with torch.no_grad():
            p = torch.softmax(full.eval().float()(torch.from_numpy(samples.astype(np.float32))), 1)
        sel_samples = p.numpy()[:, :, None, None]
    _export(selector, sel_shape, os.path.join(out, "selector.onnx"))
    diffs["selector.onnx"] = check_onnx(selector, os.path.join(out, "selector.onnx"), sel_samples)
    subs = []
    for k in range(cfg.k):
        fname = f"submodel-{k}.onnx"
        sm = gen_net.submodel(k)
        _export(sm, shape, os.path.join(out, fname))
        diffs[fname] = check_onnx(sm, os.path.join(out, fname), samples)
        subs.append(dict(file_entry(out, fname), id=k))
    c, h, w = shape
    manifest = {
        "schema_version": 1,
        "name": name,
        "version": version,
        "labels": list(classes),
        "input": {"width": w, "height": h, "channels": c, "color": "gray" if c == 1 else "rgb",
                  "layout": "NCHW", "mean": [float(v) for v in mean], "std": [float(v) for v in std]},
        "full_model": file_entry(out, "full.onnx"),
        "selector": dict(file_entry(out, "selector.onnx"), k=cfg.k, sigma=cfg.sigma, tau=cfg.tau, gamma=cfg.gamma,
                         input=selector_input),
        "submodels": subs,
        "threshold": float(threshold),
    }
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    pts = None
    if samples is not None and len(samples):
        with torch.no_grad():
            pts = selector.eval().float()(torch.from_numpy(sel_samples[:16].astype(np.float32))).tolist()
    with open(os.path.join(out, "selector-vectors.json"), "w") as f:
        json.dump(selector_vectors(cfg.k, cfg.sigma, cfg.tau, cfg.gamma, pts), f, indent=1)
    return diffs


def finite(x: float) -> bool:
    return math.isfinite(x)
