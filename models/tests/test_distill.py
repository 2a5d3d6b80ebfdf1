"""`distill` end to end on a tiny ONNX teacher and a few frames of footage (image folders): a
set in schema version 2 (the teacher at its input, the specialists at theirs) that the Rust side
loads; a rerun reads the teacher's posteriors from the cache; bad input fails clearly."""
import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from cachenet_train import distill, footage
from cachenet_train.__main__ import main

COLOURS = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200), "gray": (120, 120, 120)}


def make_teacher(path):
    """A 4-class classifier of a frame's mean colour at 32x24: which of red, green, blue, gray."""
    lin = torch.nn.Linear(3, 4)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[8.0, -4, -4], [-4, 8, -4], [-4, -4, 8], [0, 0, 0]]))
        lin.bias.copy_(torch.tensor([-1.0, -1.0, -1.0, 0.0]))
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), lin).eval()
    torch.onnx.export(net, (torch.zeros(1, 3, 24, 32),), path, dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["output"])


def make_clip(folder, colours, frames_each=6, seed=0):
    """Frames of solid colours with noise, one colour after another (temporal locality)."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder)
    i = 0
    for c in colours:
        for _ in range(frames_each):
            f = np.clip(np.array(COLOURS[c]) + rng.normal(0, 20, (48, 64, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(f).save(os.path.join(folder, f"{i:04d}.png"))
            i += 1


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    d = tmp_path_factory.mktemp("distill")
    make_teacher(str(d / "teacher.onnx"))
    (d / "labels.txt").write_text("\n".join(COLOURS) + "\n")
    make_clip(str(d / "cam-a"), ["red", "green", "red", "green"])
    make_clip(str(d / "cam-b"), ["blue", "gray", "blue", "gray"], seed=1)
    make_clip(str(d / "cam-c"), ["gray", "red"], seed=2)
    args = ["distill", "--teacher", str(d / "teacher.onnx"), "--teacher-input", "32x24",
            "--teacher-mean", "0", "0", "0", "--teacher-std", "1", "1", "1", "--labels", str(d / "labels.txt"),
            "--footage", str(d / "cam-a"), str(d / "cam-b"), "--unseen", str(d / "cam-c"),
            "--k", "2", "--student-input", "32", "--student-blocks", "2", "--student-init", "scratch",
            "--views", "2", "--epochs", "3", "--vae-epochs", "5", "--out", str(d / "set"),
            "--cache", str(d / "cache"), "--name", "tiny-distilled"]
    main(args)
    return d, args


def test_writes_a_version_2_set(distilled):
    d, _ = distilled
    out = d / "set"
    m = json.load(open(out / "manifest.json"))
    assert m["schema_version"] == 2 and m["name"] == "tiny-distilled"
    assert m["labels"] == list(COLOURS)
    assert (m["input"]["width"], m["input"]["height"]) == (32, 24)
    assert [s["input"]["width"] for s in m["submodels"]] == [32, 32]
    assert m["selector"]["input"] == "probabilities" and m["selector"]["k"] == 2
    r = json.load(open(out / "report.json"))
    assert sorted(sum(r["groups"], [])) == sorted(COLOURS)
    assert r["figures"]["unseen"]["frames"] == 12
    assert r["figures"]["later"]["frames"] == 2 * (24 - footage.split(24))
    assert 0 < r["threshold"] < 6
    assert all(v <= 1e-3 for v in r["onnx_max_abs_diff"].values())
    assert "same cameras later" in open(out / "report.md").read()


def test_the_report_holds_the_selector_ablation(distilled):
    d, _ = distilled
    r = json.load(open(d / "set" / "report.json"))
    a = r["ablation"]
    assert sorted(a) == ["S-InfoVAE", "class-consistent"]
    training_frames = 2 * footage.split(24)
    for name, v in a.items():
        assert sum(v["partition"]) == training_frames and len(v["partition"]) == 2, (name, v["partition"])
        assert v["figures"]["later"]["frames"] == 2 * (24 - footage.split(24))
        assert v["figures"]["unseen"]["frames"] == 12
        assert 0 < v["threshold"] < 6
    assert a["class-consistent"]["figures"] == r["figures"]
    md = open(d / "set" / "report.md").read()
    assert "| S-InfoVAE |" in md and "| class-consistent |" in md


def test_the_vae_selector_picks_one_specialist_per_view():
    thumbs = np.random.default_rng(0).integers(0, 256, (40, 2, 3, 8, 8), dtype=np.uint8)
    vae = distill.fit_vae(thumbs.reshape(-1, 3, 8, 8), distill.Config(vae_input=8, vae_epochs=2))
    choice = distill.vae_choice(vae, thumbs, 3, 1.0)
    assert choice.shape == (40, 2) and set(np.unique(choice)) <= {0, 1, 2}


def test_the_selector_follows_the_groups(distilled):
    d, _ = distilled
    r = json.load(open(d / "set" / "report.json"))
    labels = list(COLOURS)
    groups = [[labels.index(c) for c in g] for g in r["groups"]]
    sel = distill.VocabularySelector(len(labels), groups, 2)
    for k, g in enumerate(groups):
        for c in g:
            p = np.full((1, len(labels), 1, 1), 0.01, np.float32)
            p[0, c] = 0.97
            assert distill.select(sel, p, 2, 1.0)[0] == k


def test_rerun_reads_the_posterior_cache(distilled):
    d, args = distilled
    cached = sorted(os.listdir(d / "cache"))
    assert len(cached) == 3, cached   # one file of posteriors and features per clip
    mtimes = [os.path.getmtime(d / "cache" / f) for f in cached]
    main(args)
    assert sorted(os.listdir(d / "cache")) == cached
    assert [os.path.getmtime(d / "cache" / f) for f in cached] == mtimes
    assert "cache" not in os.listdir(d / "set")


def test_rust_side_loads_the_distilled_set(distilled):
    edge = os.environ.get("CACHENET_EDGE_BIN") or shutil.which("cachenet-edge")
    if not edge:
        pytest.skip("set CACHENET_EDGE_BIN to the cachenet-edge binary (the README's test command does)")
    d, _ = distilled
    r = subprocess.run([edge, "--check", "--model-dir", str(d / "set")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "tiny-distilled: ok" in r.stdout and "32x24x3 + 32x32x3" in r.stdout


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["distill", "--teacher", str(tmp_path / "none.onnx"), "--teacher-input", "8x8", "--labels", "x",
              "--footage", str(tmp_path), "--out", str(tmp_path / "o")])
    assert "no such file" in str(e.value)
    with pytest.raises(SystemExit) as e:
        main(["distill", "--teacher", "t.onnx", "--footage", str(tmp_path), "--out", str(tmp_path / "o")])
    assert "--teacher-input" in str(e.value)


def test_per_object_regions(tmp_path):
    """--regions: each object of the CSV is its own sequence of crops (a secondary classifier's
    case); objects train on the clip's first 70 % of frames and are judged on the rest."""
    make_teacher(str(tmp_path / "teacher.onnx"))
    (tmp_path / "labels.txt").write_text("\n".join(COLOURS) + "\n")
    folder = tmp_path / "two-objects"
    os.makedirs(folder)
    rng = np.random.default_rng(3)
    rows = ["frame,x,y,width,height,id"]
    for i in range(20):
        left, right = ("red", "blue") if i < 10 else ("green", "gray")
        f = np.zeros((40, 80, 3))
        f[:, :40] = COLOURS[left]
        f[:, 40:] = COLOURS[right]
        f = np.clip(f + rng.normal(0, 15, f.shape), 0, 255).astype(np.uint8)
        Image.fromarray(f).save(folder / f"{i:04d}.png")
        rows += [f"{i},2,2,34,34,7", f"{i},44,2,34,34,9"]
    (tmp_path / "regions.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "set"
    main(["distill", "--teacher", str(tmp_path / "teacher.onnx"), "--teacher-input", "32x24",
          "--labels", str(tmp_path / "labels.txt"), "--footage", str(folder),
          "--regions", str(tmp_path / "regions.csv"), "--k", "2", "--student-input", "32",
          "--student-blocks", "2", "--student-init", "scratch", "--views", "2", "--epochs", "2",
          "--min-frames", "2", "--out", str(out), "--cache", str(tmp_path / "cache")])
    r = json.load(open(out / "report.json"))
    assert [c["name"] for c in r["clips"]] == ["two-objects#7", "two-objects#9"]
    assert [c["n"] for c in r["clips"]] == [20, 20] and [c["train_end"] for c in r["clips"]] == [14, 14]
    assert r["figures"]["later"]["frames"] == 12
    assert json.load(open(out / "manifest.json"))["schema_version"] == 2
    (tmp_path / "bad.csv").write_text("0,1,2,3\n")
    with pytest.raises(SystemExit) as e:
        main(["distill", "--teacher", str(tmp_path / "teacher.onnx"), "--teacher-input", "32x24",
              "--labels", str(tmp_path / "labels.txt"), "--footage", str(folder),
              "--regions", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "o")])
    assert "bad.csv:1: need frame,x,y,width,height[,id]" in str(e.value)


FULLBODY = "/usr/share/opencv4/haarcascades/haarcascade_fullbody.xml"


def test_regions_from_a_detector_run_through_gstreamer(tmp_path):
    """--detector: GStreamer's facedetect (OpenCV's full-body cascade) on the first 60 frames of
    vtest.avi gives a regions CSV that the per-object path reads; a rerun takes it from the
    cache; a detector GStreamer cannot build is a clear error."""
    vtest = footage.fetch(["vtest.avi"])["vtest.avi"]
    detector = (f"identity eos-after=60 ! facedetect display=false min-size-width=24 "
                f"min-size-height=48 profile={FULLBODY}")
    csv = distill.detect_regions(vtest, detector, "faces", str(tmp_path))
    objects = distill.read_regions(csv)
    boxes = [b for obj in objects.values() for b in obj]
    assert boxes, "pedestrians found"
    assert all(0 <= f < 60 and w > 0 and h > 0 and x + w <= 768 and y + h <= 576
               for f, (x, y, w, h) in boxes)
    before = os.stat(csv).st_mtime_ns
    assert distill.detect_regions(vtest, detector, "faces", str(tmp_path)) == csv
    assert os.stat(csv).st_mtime_ns == before
    with pytest.raises(ValueError) as e:
        distill.detect_regions(vtest, "nosuchdetector", "faces", str(tmp_path))
    assert "nosuchdetector" in str(e.value)
    with pytest.raises(SystemExit) as e:
        main(["distill", "--teacher", "efficientnet-lite0", "--footage", vtest, "--regions", "-",
              "--detector", "facedetect", "--out", str(tmp_path / "o")])
    assert "one or the other" in str(e.value)


def test_resolution_check_keeps_a_mean_colour_teacher(distilled, capsys):
    """The tiny teacher answers a frame's mean colour, which no scaling changes: its answer
    survives every input size, on every frame of the segment."""
    d, _ = distilled
    r = footage.resolution_check([str(d / "cam-c")], str(d / "set"), [4, 16], 0.5, 1.0)
    assert r == {"frames": 6, "agreement": {4: 1.0, 16: 1.0}}
    main(["resolution", "--clip", str(d / "cam-c"), "--model-dir", str(d / "set"), "--sizes", "8"])
    assert "12 frames" in capsys.readouterr().out
