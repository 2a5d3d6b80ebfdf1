"""Replay sequences: test images in an order with (or without) temporal locality, written as a
PNG frame folder (for GStreamer's multifilesrc) plus a labels file."""
from __future__ import annotations

import os

import numpy as np


def sequence(labels: np.ndarray, order: str = "grouped", seed: int = 0, mean_segment: int = 25) -> np.ndarray:
    """Indices into `labels`.
    - grouped: the paper's replay, all images of one label, then the next label (shuffled within);
    - segments: random-length runs of one label (geometric lengths, mean `mean_segment`);
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
            run = int(rng.geometric(1.0 / mean_segment))
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


def area_weights(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] weights of area averaging (a box filter with fractional coverage): output
    pixel o averages the input interval [o * n_in / n_out, (o + 1) * n_in / n_out). The element's
    scaler (gst-cachenet/src/frame.rs) uses the same weights."""
    w = np.zeros((n_out, n_in), np.float64)
    scale = n_in / n_out
    for o in range(n_out):
        a, b = o * scale, (o + 1) * scale
        for i in range(int(np.floor(a)), min(n_in, int(np.ceil(b)))):
            w[o, i] = min(b, i + 1) - max(a, i)
        w[o] /= w[o].sum()
    return w


def area_resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area-average an HxW or HxWxC uint8 image to height x width (rounded to nearest)."""
    wy = area_weights(img.shape[0], height)
    wx = area_weights(img.shape[1], width)
    rows = np.tensordot(wy, img.astype(np.float64), axes=(1, 0))     # height x W [x C]
    out = np.moveaxis(np.tensordot(wx, rows, axes=(1, 1)), 0, 1)    # height x width [x C]
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)


def camera_frames(images: np.ndarray, labels: np.ndarray, items_per_class: int = 40, frames_per_item: int = 5,
                  size=(320, 240), seed: int = 0):
    """A camera-like replay: test items (uint8 NxHxWx1) rendered at 45-80 % of the frame height,
    drifting across a textured background of a random level, with brightness changes and sensor
    noise, grouped by class (each item stays for frames_per_item frames). Yields (frame HxW uint8,
    label, dataset index)."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))[:items_per_class]
        for j in idx:
            level = rng.uniform(10, 130)
            grad = rng.uniform(-0.25, 0.25, 2)
            bg = level * (1 + grad[0] * (xx / w - 0.5) + grad[1] * (yy / h - 0.5))
            side = int(rng.uniform(0.45, 0.8) * h)
            item = np.asarray(Image.fromarray(images[j][..., 0]).resize((side, side), Image.BILINEAR), np.float64)
            alpha = np.clip(item / 255.0 * 6, 0, 1)
            gain = rng.uniform(0.7, 1.1)
            x0, y0 = rng.uniform(0, w - side), rng.uniform(0, h - side)
            vx, vy = rng.uniform(-8, 8, 2)
            for f in range(frames_per_item):
                px = int(np.clip(x0 + vx * f, 0, w - side))
                py = int(np.clip(y0 + vy * f, 0, h - side))
                frame = bg.copy()
                region = frame[py:py + side, px:px + side]
                frame[py:py + side, px:px + side] = alpha * item * gain + (1 - alpha) * region
                frame += rng.normal(0, 3.0, frame.shape)
                yield np.clip(frame, 0, 255).astype(np.uint8), int(c), int(j)


def write_camera_frames(images, labels, classes, out: str, **kw) -> str:
    """The camera-like replay as PNG frames + labels.csv (same layout as write_frames)."""
    from PIL import Image
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "labels.csv"), "w") as f:
        f.write("frame,class_id,label,dataset_index\n")
        for i, (fr, c, j) in enumerate(camera_frames(images, labels, **kw)):
            Image.fromarray(fr).save(os.path.join(out, f"frame-{i:05d}.png"))
            f.write(f"{i},{c},{classes[c]},{j}\n")
    return out
