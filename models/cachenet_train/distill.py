"""Distil a CacheNet set from a teacher classifier and unlabeled footage.

The teacher (any ONNX classifier, or the built-in EfficientNet-Lite0) becomes the set's full
model. Its posteriors on the footage (cached on disk) give the working vocabulary (the classes it
names on the footage), K groups of that vocabulary (classes that occur in the same stretches of
footage share a group: temporal locality), the class-consistent selector over its posterior, and
the soft targets of K specialists: inside its group a specialist learns the teacher's posterior
restricted to the group and sharpened; on every other frame a flat posterior, so those frames miss.
A specialist is the first blocks of an ImageNet EfficientNet-Lite0 at a small input (frozen) and
a depthwise head of its own. The threshold comes from a validation slice at the end of each
clip's training part; every figure of the report comes from frames the set never saw."""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from . import footage, maths
from .nets import count_params

log = logging.getLogger("cachenet.distill")

LITE0_MEAN = [0.498, 0.498, 0.498]
LITE0_STD = [0.502, 0.502, 0.502]


@dataclass
class Config:
    k: int = 4
    student_input: int = 112         # specialists see student_input x student_input RGB
    student_blocks: int = 5          # EfficientNet-Lite0 blocks kept in front of the head
    student_init: str = "lite0"      # "lite0": ImageNet weights (frozen); "scratch": random (tests)
    head_width: int = 96
    epochs: int = 30
    batch: int = 64
    lr: float = 3e-3
    temperature: float = 0.5         # < 1 sharpens the teacher's posterior inside a group
    views: int = 4                   # training views per frame: plain, mirrored, two crops
    every: int = 1                   # use every n-th frame
    train_fraction: float = footage.TRAIN_FRACTION
    val_fraction: float = 0.2        # the end of each clip's training part: the threshold's slice
    min_frames: int = 3              # a class joins the vocabulary when it is top-1 this often
    segment: int = 25                # frames per stretch for grouping classes by co-occurrence
    agreement_target: float = 0.9    # threshold: most hits with agreement >= this on validation
    ablation: bool = True            # also distil with the paper's S-InfoVAE selector (report only)
    vae_input: int = 32              # the S-InfoVAE sees vae_input x vae_input RGB
    vae_epochs: int = 60
    seed: int = 0
    threads: int = 0


@dataclass
class Teacher:
    """An ONNX classifier with its input size, normalisation and class names."""
    path: str
    width: int
    height: int
    mean: list[float]
    std: list[float]
    labels: list[str]
    _sess: object = field(default=None, repr=False)

    def key(self) -> str:
        h = hashlib.sha256()
        with open(self.path, "rb") as f:
            h.update(f.read())
        h.update(json.dumps([self.width, self.height, self.mean, self.std]).encode())
        return h.hexdigest()[:16]

    def logits(self, rgb: np.ndarray) -> np.ndarray:
        """Logits of a batch of uint8 NHWC frames already at the teacher's input size."""
        import onnxruntime as ort
        if self._sess is None:
            o = ort.SessionOptions()
            self._sess = ort.InferenceSession(self.path, o, providers=["CPUExecutionProvider"])
            self._name = self._sess.get_inputs()[0].name
        x = normalise(rgb, self.mean, self.std)
        return np.concatenate([self._sess.run(None, {self._name: x[i:i + 1]})[0].reshape(1, -1)
                               for i in range(len(x))])


def normalise(rgb: np.ndarray, mean, std) -> np.ndarray:
    x = rgb.astype(np.float32) / 255.0
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def lite0(weights: str | None):
    from efficientnet_lite_pytorch import EfficientNet
    if weights is None:
        return EfficientNet.from_name("efficientnet-lite0").eval()
    return EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights).eval()


def export_onnx(model: nn.Module, shape, path: str) -> None:
    model = model.eval().float()
    torch.onnx.export(model, (torch.zeros(1, *shape),), path, dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["output"])


def cache_dir(out: str) -> str:
    """Where a distillation keeps what a rerun reuses (outside the set it writes)."""
    from .data import data_root
    return os.path.join(data_root(), "distill-cache", os.path.basename(os.path.abspath(out)))


def builtin_teacher(cache: str) -> Teacher:
    """EfficientNet-Lite0 (ImageNet-1k), exported to ONNX once into the cache."""
    files = footage.fetch(["efficientnet-lite0.pth", "imagenet-classes.txt"])
    os.makedirs(cache, exist_ok=True)
    path = os.path.join(cache, "teacher-efficientnet-lite0.onnx")
    if not os.path.exists(path):
        export_onnx(lite0(files["efficientnet-lite0.pth"]), (3, 224, 224), path + ".part")
        os.replace(path + ".part", path)
    labels = read_labels(files["imagenet-classes.txt"])
    return Teacher(path, 224, 224, LITE0_MEAN, LITE0_STD, labels)


def read_labels(path: str) -> list[str]:
    with open(path) as f:
        labels = [ln.strip() for ln in f if ln.strip()]
    if not labels:
        raise ValueError(f"{path}: no class names")
    return labels


class Backbone(nn.Module):
    """The first `blocks` blocks of EfficientNet-Lite0 (stem included)."""

    def __init__(self, net, blocks: int):
        super().__init__()
        self.stem = nn.Sequential(net._conv_stem, net._bn0, copy.deepcopy(net._swish))
        self.blocks = nn.ModuleList(net._blocks[:blocks])

    def forward(self, x):
        x = self.stem(x)
        for b in self.blocks:
            x = b(x)
        return x


def _dw(c_in, c_out, stride):
    return nn.Sequential(
        nn.Conv2d(c_in, c_in, 3, stride, 1, groups=c_in, bias=False), nn.BatchNorm2d(c_in), nn.ReLU6(),
        nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU6())


class Head(nn.Module):
    """Depthwise-separable head: backbone features -> logits over the teacher's classes."""

    def __init__(self, c_in: int, width: int, classes: int):
        super().__init__()
        self.body = nn.Sequential(_dw(c_in, width, 1), _dw(width, 2 * width, 2))
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, f):
        return self.fc(self.drop(self.body(f).mean((2, 3))))


class Specialist(nn.Module):
    def __init__(self, backbone: Backbone, head: Head):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x):
        return self.head(self.backbone(x))


# ---------------------------------------------------------------------------------------------
# Footage -> cached teacher logits and backbone features

@dataclass
class Clip:
    """One sequence of samples: a clip's frames, or (per-object footage) one object's crops."""
    name: str
    path: str
    n: int                  # samples: frames used (after --every), or the object's crops
    train_end: int          # first held-out sample (n for train-only footage, 0 for unseen)
    boxes: list | None = None   # per-object: (frame index, (x, y, width, height)) of each crop
    unseen: bool = False        # footage only ever evaluated on


def read_regions(path: str) -> dict[int, list[tuple[int, tuple]]]:
    """A regions CSV (`frame,x,y,width,height[,id]`, an optional header) -> object id ->
    [(frame, box)] in frame order. Without ids, the k-th region of each frame is object k."""
    import csv
    objects: dict[int, list] = {}
    per_frame: dict[int, int] = {}
    with open(path, newline="") as f:
        for line, row in enumerate(csv.reader(f), 1):
            if not row or (line == 1 and not row[0].strip().lstrip("-").isdigit()):
                continue
            try:
                v = [int(float(x)) for x in row]
            except ValueError:
                raise ValueError(f"{path}:{line}: not numbers: {row}") from None
            if len(v) not in (5, 6):
                raise ValueError(f"{path}:{line}: need frame,x,y,width,height[,id], got {len(v)} fields")
            frame, x, y, w, h = v[:5]
            if frame < 0 or x < 0 or y < 0 or w <= 0 or h <= 0:
                raise ValueError(f"{path}:{line}: negative frame or position, or an empty box: {row}")
            if len(v) == 6:
                oid = v[5]
            else:
                oid = per_frame.get(frame, 0)
                per_frame[frame] = oid + 1
            objects.setdefault(oid, []).append((frame, (x, y, w, h)))
    if not objects:
        raise ValueError(f"{path}: no regions")
    return {k: sorted(b) for k, b in sorted(objects.items())}


def gi_python() -> str:
    """A Python with PyGObject and GStreamer's overrides (Debian: python3-gi, python3-gst-1.0):
    $CACHENET_GI_PYTHON, else the system's /usr/bin/python3."""
    return os.environ.get("CACHENET_GI_PYTHON") or "/usr/bin/python3"


def detect_regions(path: str, detector: str, field: str, cache: str) -> str:
    """The regions CSV of a detector run through GStreamer on the video `path`
    (`gst_detect.py`), made once and kept in `cache` (keyed by the clip and the detector)."""
    import subprocess
    if os.path.isdir(path):
        raise ValueError(f"{path}: the detector runs on video files, not image folders")
    st = os.stat(path)
    key = hashlib.sha256(f"{os.path.abspath(path)}|{st.st_size}|{detector}|{field}".encode()).hexdigest()[:16]
    out = os.path.join(cache, "regions", f"{os.path.basename(path)}-{key}.csv")
    if os.path.exists(out):
        return out
    os.makedirs(os.path.dirname(out), exist_ok=True)
    py = gi_python()
    helper = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gst_detect.py")
    r = subprocess.run([py, helper, path, detector, out + ".part", "--field", field],
                       capture_output=True, text=True)
    if r.returncode != 0:
        tail = (r.stderr.strip().splitlines() or ["(no message)"])[-1]
        if "No module named 'gi'" in r.stderr:
            tail = f"{py} has no PyGObject (Debian: apt-get install python3-gi python3-gst-1.0)"
        raise ValueError(f"{os.path.basename(path)}: {tail}")
    os.replace(out + ".part", out)
    logging.info("%s", r.stdout.strip())
    return out


def object_clips(name: str, path: str, regions: str, frames: int, train_end: int | None) -> list[Clip]:
    """One Clip per object of a regions CSV: its crops in frame order; those in the clip's first
    `train_end` frames train (None: an unseen clip)."""
    out = []
    for oid, boxes in read_regions(regions).items():
        boxes = [(f, b) for f, b in boxes if f < frames]
        if not boxes:
            continue
        end = 0 if train_end is None else sum(1 for f, _ in boxes if f < train_end)
        out.append(Clip(f"{name}#{oid}", path, len(boxes), end, boxes, unseen=train_end is None))
    return out


def _clip_key(path: str) -> str:
    st = os.stat(path)
    return hashlib.sha256(f"{os.path.abspath(path)}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]


def _views(rgb: np.ndarray, count: int, rng: np.random.Generator):
    """(view, box): view 0 the frame, 1 mirrored, then random crops of 80-95 % of each side."""
    h, w = rgb.shape[:2]
    out = [(rgb, None)]
    if count > 1:
        out.append((np.ascontiguousarray(rgb[:, ::-1]), None))
    while len(out) < count:
        s = rng.uniform(0.8, 0.95)
        cw, ch = int(w * s), int(h * s)
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        out.append((rgb, (x, y, cw, ch)))
    return out


def _crops(frames, clip: Clip):
    """The object's crops (boxes clamped to the frame), in the order of its boxes."""
    todo = list(clip.boxes)
    j = 0
    for i, rgb in enumerate(frames):
        while j < len(todo) and todo[j][0] == i:
            x, y, w, h = todo[j][1]
            fh, fw = rgb.shape[:2]
            x0, y0, x1, y1 = min(x, fw - 1), min(y, fh - 1), min(x + w, fw), min(y + h, fh)
            yield np.ascontiguousarray(rgb[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)])
            j += 1
        if j == len(todo):
            return
    if j < len(todo):
        raise ValueError(f"{clip.name}: regions name frame {todo[j][0]} but the footage has {i + 1} frames")


@torch.no_grad()
def encode_clip(clip: Clip, teacher: Teacher, backbone: Backbone, cfg: Config, cache: str, views: int):
    """Teacher logits [n, views, classes], backbone features [n, views, C, h, w] (float16) and
    thumbnails [n, views, 3, t, t] (uint8, the S-InfoVAE's input) of a clip, read from the cache
    when a previous run computed them."""
    key = f"{_clip_key(clip.path)}-{teacher.key()}-area64-e{cfg.every}-v{views}-s{cfg.student_input}" \
          f"-b{cfg.student_blocks}-{cfg.student_init}-t{cfg.vae_input}"
    if clip.boxes is not None:
        key += "-" + hashlib.sha256(json.dumps(clip.boxes).encode()).hexdigest()[:12]
    path = os.path.join(cache, f"{clip.name}-{key}.npz")
    if os.path.exists(path):
        z = np.load(path)
        return z["logits"], z["features"], z["thumbs"]
    from tqdm import tqdm
    rng = np.random.default_rng(cfg.seed)
    logits, feats, thumbs = [], [], []
    s, t = cfg.student_input, cfg.vae_input
    dev = next(backbone.parameters()).device
    frames = (f for i, f in enumerate(footage.frames(clip.path)) if i % cfg.every == 0)
    if clip.boxes is not None:
        frames = _crops(frames, clip)
    for rgb in tqdm(frames, total=clip.n, desc=f"teacher {clip.name}", mininterval=5):
        vs = _views(rgb, views, rng)
        t_in = np.stack([footage.area_scale(v, teacher.width, teacher.height, b) for v, b in vs])
        s_in = np.stack([footage.area_scale(v, s, s, b) for v, b in vs])
        logits.append(teacher.logits(t_in).astype(np.float32))
        x = torch.from_numpy(normalise(s_in, LITE0_MEAN, LITE0_STD))
        feats.append(backbone(x.to(dev)).cpu().numpy().astype(np.float16))
        thumbs.append(np.stack([footage.area_scale(v, t, t, b) for v, b in vs]).transpose(0, 3, 1, 2))
    logits, feats, thumbs = np.stack(logits), np.stack(feats), np.stack(thumbs)
    np.savez(path + ".part.npz", logits=logits, features=feats, thumbs=thumbs)
    os.replace(path + ".part.npz", path)
    return logits, feats, thumbs


# ---------------------------------------------------------------------------------------------
# Vocabulary, groups, selector

def vocabulary(top1: np.ndarray, min_frames: int) -> list[int]:
    ids, counts = np.unique(top1, return_counts=True)
    return sorted(int(c) for c, n in zip(ids, counts) if n >= min_frames)


def group_classes(vocab: list[int], top1_by_segment: list[np.ndarray], k: int) -> list[list[int]]:
    """K groups of the vocabulary: agglomerative merging of the classes that are top-1 in the
    same stretches of footage (cosine similarity of their per-stretch counts), at most ceil(2V/K)
    classes a group. A camera then stays with one specialist while its scene lasts."""
    index = {c: i for i, c in enumerate(vocab)}
    m = np.zeros((len(vocab), len(top1_by_segment)))
    for s, seg in enumerate(top1_by_segment):
        for c in seg:
            if int(c) in index:
                m[index[int(c)], s] += 1
    m /= np.linalg.norm(m, axis=1, keepdims=True) + 1e-12
    sim = m @ m.T
    groups = [[c] for c in vocab]
    weight = {c: m[index[c]].sum() for c in vocab}
    cap = max(1, -(-2 * len(vocab) // k))
    while len(groups) > k:
        best = None
        for i in range(len(groups)):
            for j in range(i + 1, len(groups)):
                if len(groups[i]) + len(groups[j]) > cap:
                    continue
                w = np.mean([sim[index[a], index[b]] for a in groups[i] for b in groups[j]])
                if best is None or w > best[0]:
                    best = (w, i, j)
        if best is None:
            order = sorted(range(len(groups)), key=lambda i: sum(weight[c] for c in groups[i]))
            best = (0.0, order[0], order[1])
        _, i, j = best
        groups[i] = sorted(groups[i] + groups[j])
        del groups[j]
    while len(groups) < k:   # fewer classes than K: split the largest group
        groups.sort(key=len, reverse=True)
        if len(groups[0]) < 2:
            break
        g = groups.pop(0)
        groups += [g[: len(g) // 2], g[len(g) // 2:]]
    return sorted(groups, key=lambda g: g[0])


class VocabularySelector(nn.Module):
    """The class-consistent selector over the teacher's posterior p (1xNx1x1): the 2-D point
    sum_c p_c (cos t_c, sin t_c) over the vocabulary (other classes weigh nothing); class c's
    angle t_c lies in its group's sector, so eqs 9-12 select that group's specialist."""

    def __init__(self, classes: int, groups: list[list[int]], k: int):
        super().__init__()
        width = maths.TWO_PI / k
        table = torch.zeros(classes, 2)
        for g, grp in enumerate(groups):
            for j, c in enumerate(grp):
                a = width * (g + 0.5) + (0.0 if len(grp) == 1 else (j / (len(grp) - 1) - 0.5) * 0.2 * width)
                table[c] = torch.tensor([math.cos(a), math.sin(a)])
        self.register_buffer("table", table)

    def forward(self, p):
        return p.flatten(1) @ self.table


def select(selector: VocabularySelector, probs: np.ndarray, k: int, sigma: float) -> np.ndarray:
    """The edge's choice for each posterior: eqs 9-12 on the selector's point."""
    with torch.no_grad():
        return sector(selector(torch.from_numpy(probs.astype(np.float32))), k, sigma)


def sector(z: torch.Tensor, k: int, sigma: float) -> np.ndarray:
    """The specialist whose sector holds each 2-D point z [n, 2] (eqs 9-12)."""
    return maths.soft_code_eq12(maths.angle_eq9(z.double()), k, sigma).argmax(1).numpy()


def softmax(x: np.ndarray, t: float = 1.0) -> np.ndarray:
    z = x / t
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def entropy(p: np.ndarray) -> np.ndarray:
    return -(p * np.log(np.clip(p, 1e-12, 1))).sum(-1)


def targets(logits: np.ndarray, part: np.ndarray, group: list[int], k: int, temperature: float) -> np.ndarray:
    """Specialist k's soft targets: the teacher's posterior over group k's classes at
    `temperature` where the selector picks k, a flat posterior elsewhere."""
    n, classes = logits.shape
    out = np.full((n, classes), 1.0 / classes, np.float32)
    mine = part == k
    if mine.any():
        g = np.asarray(group)
        out[mine] = 0.0
        out[np.ix_(np.flatnonzero(mine), g)] = softmax(logits[mine][:, g], temperature)
    return out


def device() -> torch.device:
    """A CUDA GPU when one is present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def fit_head(feats: np.ndarray, soft: np.ndarray, classes: int, cfg: Config, seed: int) -> Head:
    torch.manual_seed(seed)
    dev = device()
    head = Head(feats.shape[1], cfg.head_width, classes).to(dev)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=1e-4)
    steps = cfg.epochs * max(1, math.ceil(len(feats) / cfg.batch))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=steps)
    x_all, y_all = torch.from_numpy(feats).to(dev), torch.from_numpy(soft).to(dev)
    g = torch.Generator().manual_seed(seed)
    head.train()
    for _ in range(cfg.epochs):
        perm = torch.randperm(len(x_all), generator=g).to(dev)
        for i in range(0, len(perm), cfg.batch):
            b = perm[i:i + cfg.batch]
            x, y = x_all[b].float(), y_all[b]
            loss = -(y * torch.log_softmax(head(x), 1)).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return head.cpu().eval()


@torch.no_grad()
def head_logits(head: Head, feats: np.ndarray) -> np.ndarray:
    out = [head(torch.from_numpy(feats[i:i + 256]).float()).numpy() for i in range(0, len(feats), 256)]
    return np.concatenate(out) if out else np.zeros((0, head.fc.out_features), np.float32)


# ---------------------------------------------------------------------------------------------
# Replay: what the element does with cache-size 1 and sync offload

def replay(sub_logits: np.ndarray, teacher_logits: np.ndarray, choice: np.ndarray, threshold: float) -> dict:
    """sub_logits [K, n, classes] of every specialist on a clip's frames in order, the teacher's
    logits [n, classes] and the edge's choice per frame. The device starts with no submodel;
    a miss is answered by the teacher and caches the chosen specialist."""
    teacher_top = teacher_logits.argmax(1)
    cached = -1
    hits, agree, local_agree, answers = 0, 0, 0, []
    swaps = 0
    for i in range(len(teacher_top)):
        if cached >= 0:
            p = softmax(sub_logits[cached, i])
            if entropy(p) < threshold:
                hits += 1
                a = int(p.argmax())
                local_agree += int(a == teacher_top[i])
                agree += int(a == teacher_top[i])
                answers.append(a)
                continue
        agree += 1
        answers.append(int(teacher_top[i]))
        if choice[i] != cached:
            swaps += int(cached >= 0)
            cached = int(choice[i])
    n = len(teacher_top)
    return {"frames": n, "hits": hits, "agree": agree, "local_agree": local_agree, "swaps": swaps,
            "answers": answers}


def summarise(runs: list[dict], teacher_logits: list[np.ndarray]) -> dict:
    """Pooled figures of several replays: hit rate, top-1 agreement with the teacher over all
    frames, over the local answers, over the frames where the teacher is confident (top-1
    probability >= 0.5), and the teacher's own frame-to-frame agreement on those frames."""
    n = sum(r["frames"] for r in runs)
    hits = sum(r["hits"] for r in runs)
    conf_n = conf_agree = steady_n = steady = 0
    for r, t in zip(runs, teacher_logits):
        p = softmax(t)
        top, conf = p.argmax(1), p.max(1) >= 0.5
        ans = np.asarray(r["answers"])
        conf_n += int(conf.sum())
        conf_agree += int((ans[conf] == top[conf]).sum())
        if len(top) > 1:
            steady_n += len(top) - 1
            steady += int((top[1:] == top[:-1]).sum())
    return {
        "frames": n,
        "hit_rate": hits / n if n else 0.0,
        "agreement": sum(r["agree"] for r in runs) / n if n else 0.0,
        "local_frames": hits,
        "local_agreement": sum(r["local_agree"] for r in runs) / hits if hits else None,
        "confident_frames": conf_n,
        "confident_agreement": conf_agree / conf_n if conf_n else None,
        "teacher_frame_to_frame": steady / steady_n if steady_n else None,
        "swaps": sum(r["swaps"] for r in runs),
    }


def choose_threshold(val: list[tuple[np.ndarray, np.ndarray, np.ndarray]], target: float) -> tuple[float, list]:
    """The threshold with the most hits on the validation slice whose answers (local and
    edge) agree with the teacher on >= target of its frames (the sweep is kept for the
    report)."""
    sweep = []
    for t in np.round(np.arange(0.1, 6.0, 0.1), 2):
        s = summarise([replay(sl, tl, ch, float(t)) for sl, tl, ch in val], [tl for _, tl, _ in val])
        sweep.append({"threshold": float(t), **{k: s[k] for k in ("hit_rate", "agreement", "local_agreement")}})
    ok = [s for s in sweep if s["agreement"] >= target]
    best = max(ok, key=lambda s: (s["hit_rate"], -s["threshold"])) if ok else min(sweep, key=lambda s: s["threshold"])
    return best["threshold"], sweep


def variant(cfg: Config, clips: list[Clip], enc: dict, val_idx: dict, classes: int, choice: dict,
            groups: list[list[int]], what: str) -> dict:
    """One selector's set: `choice[clip]` [n, views] is the selector's specialist for each view,
    `groups[k]` the classes specialist k learns. Fits the heads without the validation slice,
    chooses the threshold there, refits on the whole training part and replays the held-out
    footage with the refitted heads."""
    def train(end_of, label):
        parts = [c for c in clips if c.name in val_idx]
        lg = np.concatenate([enc[c.name][0][:end_of(c)].reshape(-1, classes) for c in parts])
        ft = np.concatenate([enc[c.name][1][:end_of(c)].reshape(-1, *enc[c.name][1].shape[2:]) for c in parts])
        part = np.concatenate([choice[c.name][:end_of(c)].reshape(-1) for c in parts])
        hs = []
        for k, grp in enumerate(groups):
            hs.append(fit_head(ft, targets(lg, part, grp, k, cfg.temperature), classes, cfg, cfg.seed + k))
            log.info("%s: specialist %d (%s): %d of %d views in its partition", what, k, label,
                     int((part == k).sum()), len(part))
        return hs

    def run(heads, c: Clip, lo: int, hi: int):
        lg, ft, _ = enc[c.name]
        sl = np.stack([head_logits(h, ft[lo:hi, 0]) for h in heads])
        return sl, lg[lo:hi, 0], choice[c.name][lo:hi, 0]

    heads = train(lambda c: val_idx[c.name][0], "without the validation slice")
    val = [run(heads, c, *val_idx[c.name]) for c in clips if c.name in val_idx]
    threshold, sweep = choose_threshold(val, cfg.agreement_target)
    heads = train(lambda c: c.train_end, "the whole training part")

    def judge(parts):
        rs = [run(heads, c, lo, hi) for c, lo, hi in parts]
        reps = [replay(*r, threshold) for r in rs]
        per = {c.name: summarise([p], [r[1]]) for (c, _, _), p, r in zip(parts, reps, rs)}
        return summarise(reps, [r[1] for r in rs]), per

    later = [(c, c.train_end, c.n) for c in clips if not c.unseen and c.train_end < c.n]
    unseen = [(c, 0, c.n) for c in clips if c.unseen]
    figures = {"validation": summarise([replay(*v, threshold) for v in val], [v[1] for v in val])}
    if later:
        figures["later"], figures["later_clips"] = judge(later)
    if unseen:
        figures["unseen"], figures["unseen_clips"] = judge(unseen)
    train_frames = np.concatenate([choice[c.name][:c.train_end, 0] for c in clips if c.name in val_idx])
    partition = [int((train_frames == k).sum()) for k in range(len(groups))]
    return {"heads": heads, "threshold": threshold, "sweep": sweep, "figures": figures, "partition": partition}


def _vae_input(thumbs: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(thumbs.reshape(len(thumbs), -1)).float() / 127.5 - 1.0


def fit_vae(thumbs: np.ndarray, cfg: Config):
    """The paper's S-InfoVAE (eqs 7-8, alpha 0, lambda 10, as for Fashion-MNIST) on the frames'
    thumbnails [N, 3, t, t] uint8: stage 1 to 32 dimensions, stage 2 to the 2-D point."""
    from .nets import SInfoVAE
    torch.manual_seed(cfg.seed)
    dev = device()
    x_all = _vae_input(thumbs).to(dev)
    vae = SInfoVAE(x_all.shape[1], 32).to(dev)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(cfg.seed)
    vae.train()
    for _ in range(cfg.vae_epochs):
        perm = torch.randperm(len(x_all), generator=g).to(dev)
        for i in range(0, len(perm), 128):
            l1, l2, _ = vae.losses(x_all[perm[i:i + 128]], 0.0, 10.0)
            opt.zero_grad()
            (l1 + l2).backward()
            opt.step()
    return vae.cpu().eval()


@torch.no_grad()
def vae_choice(vae, thumbs: np.ndarray, k: int, sigma: float) -> np.ndarray:
    """The S-InfoVAE selector's specialist for each thumbnail of thumbs [n, views, 3, t, t]."""
    return sector(vae.point(_vae_input(thumbs.reshape(-1, *thumbs.shape[2:]))), k, sigma).reshape(thumbs.shape[:2])


# ---------------------------------------------------------------------------------------------

def distill(cfg: Config, teacher: Teacher, clips: list[Clip], out: str, name: str, version: str,
            cache: str | None = None) -> dict:
    os.makedirs(out, exist_ok=True)
    cache = cache or cache_dir(out)
    os.makedirs(cache, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.time()
    weights = footage.fetch(["efficientnet-lite0.pth"])["efficientnet-lite0.pth"] \
        if cfg.student_init == "lite0" else None
    net = lite0(weights)
    if cfg.student_init != "lite0":
        torch.manual_seed(cfg.seed)
    backbone = Backbone(net, cfg.student_blocks).eval().to(device())
    classes = len(teacher.labels)
    enc = {}
    for c in clips:
        views = cfg.views if c.train_end > 0 else 1
        lg, ft, th = encode_clip(c, teacher, backbone, cfg, cache, views)
        if lg.shape[-1] != classes:
            raise ValueError(f"the teacher answers {lg.shape[-1]} classes but --labels has {classes} names")
        enc[c.name] = (lg, ft, th)
    log.info("teacher posteriors and features of %d clips in %.0f s", len(clips), time.time() - t0)

    # Training part of each clip: [0, fit_end) fits the heads, [fit_end, train_end) is validation.
    val_idx, segs = {}, []
    for c in clips:
        if c.train_end == 0:
            continue
        val_idx[c.name] = (int(round(c.train_end * (1 - cfg.val_fraction))), c.train_end)
        top = enc[c.name][0][:c.train_end, 0].argmax(1)
        segs += [top[i:i + cfg.segment] for i in range(0, len(top), cfg.segment)]
    if not val_idx:
        raise ValueError("no training footage: every clip is held out")
    vocab = vocabulary(np.concatenate(segs), cfg.min_frames)
    if len(vocab) < cfg.k:
        raise ValueError(f"the teacher names only {len(vocab)} classes at least {cfg.min_frames} times on the "
                         f"training footage; use a smaller --k or more footage")
    groups = group_classes(vocab, segs, cfg.k)
    log.info("vocabulary: %d classes; groups: %s", len(vocab),
             [[teacher.labels[c] for c in g] for g in groups])
    selector = VocabularySelector(classes, groups, cfg.k)
    sigma = maths.sigma_eq13(cfg.k, 0.3, 0.3)

    def class_choice(lg):
        return select(selector, softmax(lg.reshape(-1, classes))[:, :, None, None], cfg.k, sigma) \
            .reshape(lg.shape[:2])
    main = variant(cfg, clips, enc, val_idx, classes, {c.name: class_choice(enc[c.name][0]) for c in clips},
                   groups, "class-consistent selector")
    heads, threshold = main["heads"], main["threshold"]
    log.info("threshold %.2f from the validation slice", threshold)
    figures = main["figures"]
    ablation = None
    if cfg.ablation:
        # The paper's selector: an S-InfoVAE on the frame; its 2-D point's sector (eqs 9-12) picks
        # the specialist, which learns the teacher's posterior over the whole vocabulary there.
        fit_thumbs = np.concatenate([enc[c.name][2][:val_idx[c.name][0]].reshape(-1, *enc[c.name][2].shape[2:])
                                     for c in clips if c.name in val_idx])
        vae = fit_vae(fit_thumbs, cfg)
        choice = {c.name: vae_choice(vae, enc[c.name][2], cfg.k, sigma) for c in clips}
        alt = variant(cfg, clips, enc, val_idx, classes, choice, [vocab] * cfg.k, "S-InfoVAE selector")
        ablation = {name: {"threshold": v["threshold"], "partition": v["partition"], "figures": v["figures"]}
                    for name, v in (("class-consistent", main), ("S-InfoVAE", alt))}

    # Export: the teacher is the full model; the specialists are standalone ONNX files.
    full = os.path.join(out, "full.onnx")
    shutil.copyfile(teacher.path, full)
    s = cfg.student_input
    specialists = [Specialist(backbone.cpu(), h).eval() for h in heads]
    for k, sp in enumerate(specialists):
        export_onnx(sp, (3, s, s), os.path.join(out, f"submodel-{k}.onnx"))
    export_onnx(selector, (classes, 1, 1), os.path.join(out, "selector.onnx"))
    diffs = check_exports(out, specialists, selector, s, classes)
    macs_sub = onnx_macs(os.path.join(out, "submodel-0.onnx"), (3, s, s))
    macs_teacher = onnx_macs(full, (3, teacher.height, teacher.width))
    manifest = write_manifest(out, name, version, teacher, cfg, threshold, sigma)
    report = {
        "config": asdict(cfg), "teacher": {"file": os.path.basename(teacher.path), "input": [teacher.width,
                                           teacher.height], "macs": macs_teacher},
        "clips": [asdict(c) for c in clips],
        "vocabulary": [teacher.labels[c] for c in vocab],
        "groups": [[teacher.labels[c] for c in g] for g in groups],
        "specialist": {"input": [s, s], "macs": macs_sub, "params": count_params(specialists[0]),
                       "macs_fraction_of_teacher": macs_sub / macs_teacher if macs_teacher else None},
        "threshold": threshold, "threshold_sweep": main["sweep"], "figures": figures,
        "partition": main["partition"], "ablation": ablation, "onnx_max_abs_diff": diffs,
        "seconds": round(time.time() - t0, 1), "manifest": manifest["name"],
    }
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    write_report_md(out, report)
    return report


def onnx_macs(path: str, shape) -> int:
    """Multiply-accumulates of the Conv, Gemm and MatMul nodes of an ONNX classifier for one
    input of `shape` (C, H, W): every such node's output is read from one onnxruntime run (its
    shape is then known whatever the graph computes its padding with)."""
    import onnx
    import onnxruntime as ort
    m = onnx.load(path)
    nodes = [n for n in m.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    have = {o.name for o in m.graph.output}
    for n in nodes:
        if n.output[0] not in have:
            m.graph.output.append(onnx.ValueInfoProto(name=n.output[0]))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = sess.run([n.output[0] for n in nodes], {sess.get_inputs()[0].name: np.zeros((1, *shape), np.float32)})
    weights = {i.name: list(i.dims) for i in m.graph.initializer}
    total = 0
    for n, out in zip(nodes, outs):
        w = weights.get(n.input[1])
        if w is None:
            continue
        if n.op_type == "Conv":
            total += out.size * int(np.prod(w[1:]))
        elif n.op_type == "Gemm":
            trans_b = any(a.name == "transB" and a.i for a in n.attribute)
            total += out.size * (w[1] if trans_b else w[0])
        else:
            total += out.size * w[0]
    return int(total)


def check_exports(out: str, specialists, selector, s: int, classes: int) -> dict:
    import onnx
    import onnxruntime as ort
    rng = np.random.default_rng(0)
    diffs = {}
    checks = [(f"submodel-{k}.onnx", sp, (3, s, s)) for k, sp in enumerate(specialists)]
    checks.append(("selector.onnx", selector, (classes, 1, 1)))
    for fname, model, shape in checks:
        path = os.path.join(out, fname)
        onnx.checker.check_model(onnx.load(path))
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        x = rng.normal(size=(1, *shape)).astype(np.float32)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        got = sess.run(None, {"input": x})[0]
        diffs[fname] = float(np.abs(ref - got).max())
        if diffs[fname] > 1e-3:
            raise AssertionError(f"{fname}: onnxruntime differs from PyTorch by {diffs[fname]:.2e}")
    return diffs


def write_manifest(out, name, version, teacher: Teacher, cfg: Config, threshold: float, sigma: float) -> dict:
    from .export import file_entry

    def inp(w, h, mean, std):
        return {"width": w, "height": h, "channels": 3, "color": "rgb", "layout": "NCHW",
                "mean": [float(v) for v in mean], "std": [float(v) for v in std]}
    s = cfg.student_input
    manifest = {
        "schema_version": 2,
        "name": name,
        "version": version,
        "labels": list(teacher.labels),
        "input": inp(teacher.width, teacher.height, teacher.mean, teacher.std),
        "full_model": file_entry(out, "full.onnx"),
        "selector": dict(file_entry(out, "selector.onnx"), k=cfg.k, sigma=sigma, tau=0.3, gamma=0.3,
                         input="probabilities"),
        "submodels": [dict(file_entry(out, f"submodel-{k}.onnx"), id=k, input=inp(s, s, LITE0_MEAN, LITE0_STD))
                      for k in range(cfg.k)],
        "threshold": float(threshold),
    }
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    return manifest


def _pct(x):
    return "n/a" if x is None else f"{100 * x:.1f} %"


def write_report_md(out: str, r: dict) -> None:
    f = r["figures"]
    lines = [f"# {r['manifest']}: distilled from {r['teacher']['file']}", "",
             f"Teacher input {r['teacher']['input'][0]}x{r['teacher']['input'][1]}, "
             f"{r['teacher']['macs'] or 0:,} MACs; each specialist {r['specialist']['input'][0]}x"
             f"{r['specialist']['input'][1]}, {r['specialist']['macs']:,} MACs "
             f"({_pct(r['specialist']['macs_fraction_of_teacher'])} of the teacher), "
             f"{r['specialist']['params']:,} parameters.", "",
             f"Vocabulary: {len(r['vocabulary'])} classes. Groups (one specialist each):", ""]
    lines += [f"{k}. {', '.join(g)}" for k, g in enumerate(r["groups"])]
    lines += ["", f"Threshold {r['threshold']:.2f} (most hits with >= {100 * r['config']['agreement_target']:.0f} % "
              "agreement with the teacher on the validation slice). Replay with cache size 1, every frame in "
              "order; a miss is answered by the teacher (the edge); agreement is top-1 agreement with the "
              "teacher:", "",
              "| footage | frames | hit rate | agreement | local agreement | teacher p>=0.5: frames, agreement "
              "| teacher frame-to-frame |", "|---|---|---|---|---|---|---|"]

    def row(label, s):
        lines.append(f"| {label} | {s['frames']} | {_pct(s['hit_rate'])} | {_pct(s['agreement'])} | "
                     f"{_pct(s['local_agreement'])} ({s['local_frames']}) | {s['confident_frames']}, "
                     f"{_pct(s['confident_agreement'])} | {_pct(s['teacher_frame_to_frame'])} |")
    row("validation slice (training clips)", f["validation"])
    if "later" in f:
        row("**same cameras later** (held out)", f["later"])
        for n, s in f["later_clips"].items():
            row(f"  {n}, last {100 - round(100 * r['config']['train_fraction'])} %", s)
    if "unseen" in f:
        row("**scenes never met**", f["unseen"])
        for n, s in f["unseen_clips"].items():
            row(f"  {n}", s)
    if r.get("ablation"):
        lines += ["", "Selector ablation: the same distillation with the paper's S-InfoVAE selector (an S-InfoVAE "
                  f"on the frame at {r['config']['vae_input']}x{r['config']['vae_input']}, its 2-D point's sector "
                  "picks the specialist; each specialist learns the teacher's posterior over the whole vocabulary "
                  "on its partition, a flat one elsewhere; threshold chosen the same way):", "",
                  "| selector | threshold | training frames per specialist | validation: hit rate, agreement "
                  "| same cameras later: hit rate, agreement, local agreement | scenes never met: hit rate, "
                  "agreement |", "|---|---|---|---|---|---|"]
        for name, a in r["ablation"].items():
            fa = a["figures"]
            later = fa.get("later")
            unseen = fa.get("unseen")
            lines.append(
                f"| {name} | {a['threshold']:.2f} | {', '.join(str(p) for p in a['partition'])} | "
                f"{_pct(fa['validation']['hit_rate'])}, {_pct(fa['validation']['agreement'])} | "
                + (f"{_pct(later['hit_rate'])}, {_pct(later['agreement'])}, {_pct(later['local_agreement'])} | "
                   if later else "n/a | ")
                + (f"{_pct(unseen['hit_rate'])}, {_pct(unseen['agreement'])} |" if unseen else "n/a |"))
    with open(os.path.join(out, "report.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
