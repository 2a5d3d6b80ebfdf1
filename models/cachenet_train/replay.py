"""Replay sequences: test images in an order with (or without) temporal locality, written as a
PNG frame folder (for GStreamer's multifilesrc) plus a labels file."""
from __future__ import annotations

import os

import numpy as np


def sequence(labels: np.ndarray, order: str = "grouped", seed: int = 0, mean_segment: int = 50) -> np.ndarray:
    """Indices into `labels`.
    - grouped: the paper's replay, all images of one label, then the next label (shuffled within);
    - segments: random-length runs of one label (Markov switching, mean run `mean_segment`);
    - shuffled: no temporal locality."""
    rng = np.random.default_rng(seed)
    if order == "shuffled":
        return rng.permutation(len(labels))
    by_label = {c: list(rng.permutation(np.flatnonzero(labels == c))) for c in np.unique(labels)}
    if order == "grouped":
        return np.concatenate([np.asarray(by_label[c], dtype=np.int64) for c in sorted(by_label)])
    if order == "segments":
        out = []
        classes = sorted(by_label)
        cur = rng.choice(classes)
        while any(by_label.values()):
            if not by_label[cur]:
                cur = rng.choice([c for c in classes if by_label[c]])
            run = 1 + rng.geometric(1.0 / mean_segment)
            take, by_label[cur] = by_label[cur][:run], by_label[cur][run:]
            out.extend(take)
            cur = rng.choice([c for c in classes if c != cur] or classes)
        return np.asarray(out, dtype=np.int64)
    raise ValueError(f"unknown order {order!r} (grouped, segments, shuffled)")


def write_frames(images: np.ndarray, labels: np.ndarray, classes: list[str], idx: np.ndarray, out: str) -> str:
    """frame-00000.png ... and labels.csv (frame,class_id,label,dataset_index)."""
    from PIL import Image
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "labels.csv"), "w") as f:
        f.write("frame,class_id,label,dataset_index\n")
        for i, j in enumerate(idx):
            im = images[j]
            Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im).save(os.path.join(out, f"frame-{i:05d}.png"))
            f.write(f"{i},{int(labels[j])},{classes[int(labels[j])]},{int(j)}\n")
    return out
