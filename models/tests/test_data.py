"""Loaders on the real files: Fashion-MNIST from the Debian package, the 20 real CIFAR-10 test
images from the foolbox wheel (written to and read back from CIFAR-10's binary format)."""
import gzip
import os
import struct

import numpy as np
import pytest

from cachenet_train import data, replay


def test_idx_round_trip(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    p = tmp_path / "x-idx3-ubyte.gz"
    with gzip.open(p, "wb") as f:
        f.write(bytes([0, 0, 8, 3]) + struct.pack(">III", 2, 3, 4) + arr.tobytes())
    assert (data.read_idx(str(p)) == arr).all()
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x05abc")
    with pytest.raises(ValueError, match="bad magic"):
        data.read_idx(str(bad))


def test_fashion_mnist_real_files():
    root = data.fetch_fashion_mnist()
    test = data.load_fashion_mnist(root, "test")
    assert test.images.shape == (10000, 28, 28, 1)
    assert np.bincount(test.labels).tolist() == [1000] * 10
    train = data.load_fashion_mnist(root, "train")
    assert len(train) == 60000 and train.images.max() == 255


def test_cifar10_binary_loader_on_real_images(tmp_path):
    root = data.fetch_foolbox_cifar10()
    ds = data.load_foolbox_cifar10(root)
    assert ds.images.shape == (20, 32, 32, 3)
    assert set(ds.labels.tolist()) <= set(range(10))
    batch = tmp_path / "test_batch.bin"
    data.write_cifar10_batch(str(batch), ds.images, ds.labels)
    assert os.path.getsize(batch) == 20 * 3073
    back = data.load_cifar10(str(tmp_path), "test")
    assert (back.images == ds.images).all() and (back.labels == ds.labels).all()
    assert back.classes[0] == "airplane"
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "test_batch.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="multiple of 3073"):
        data.load_cifar10(str(tmp_path / "broken"), "test")


def test_image_folder(tmp_path):
    from PIL import Image
    for c, v in [("cats", 10), ("dogs", 200)]:
        (tmp_path / c).mkdir()
        for i in range(3):
            Image.fromarray(np.full((5, 6, 3), v + i, np.uint8)).save(tmp_path / c / f"{i}.png")
    ds = data.load_image_folder(str(tmp_path))
    assert ds.classes == ["cats", "dogs"] and ds.images.shape == (6, 5, 6, 3)
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1] and ds.images[3, 0, 0, 0] == 200


def test_replay_orders(tmp_path):
    labels = np.repeat(np.arange(3), 20)
    g = replay.sequence(labels, "grouped", 1)
    assert sorted(g.tolist()) == list(range(60))
    assert labels[g].tolist() == sorted(labels.tolist())
    s = replay.sequence(labels, "segments", 1, mean_segment=5)
    assert sorted(s.tolist()) == list(range(60))
    sh = replay.sequence(labels, "shuffled", 1)
    assert sorted(sh.tolist()) == list(range(60)) and sh.tolist() != g.tolist()
    assert replay.sequence(labels, "grouped", 1).tolist() == g.tolist()  # seeded
    imgs = np.zeros((60, 4, 4, 1), np.uint8)
    out = replay.write_frames(imgs, labels, ["a", "b", "c"], g[:5], str(tmp_path / "f"))
    assert (tmp_path / "f" / "frame-00004.png").exists()
    assert open(os.path.join(out, "labels.csv")).read().splitlines()[1].startswith("0,0,a,")
