"""A smoke run of the whole pipeline on a few hundred real images: training, ONNX export and
checks, manifest, report; then the Rust side (cachenet-edge --check) loads the exported set."""
import json
import os
import shutil
import subprocess

import pytest

from cachenet_train.__main__ import main


# Small networks: the smoke run checks the pipeline, not the shipped proportions.
SMALL = ["--limit", "384", "--test-limit", "200", "--epochs-full", "1", "--epochs", "2", "--nu", "1",
         "--batch", "64", "--full-widths", "16", "32", "64", "--full-blocks", "1", "--sub-widths", "8", "16", "32"]


@pytest.fixture(scope="module")
def smoke_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("set") / "smoke"
    main(["fit", "--k", "3", "--out", str(out), *SMALL])
    return out


def test_exports_everything(smoke_set):
    names = sorted(os.listdir(smoke_set))
    for f in ["full.onnx", "selector.onnx", "submodel-0.onnx", "submodel-2.onnx", "manifest.json",
              "report.md", "partitions.png", "losses.png", "threshold.png", "selector-vectors.json"]:
        assert f in names, names
    m = json.load(open(smoke_set / "manifest.json"))
    assert m["selector"]["k"] == 3 and len(m["submodels"]) == 3
    assert m["input"] == {**m["input"], "width": 28, "height": 28, "channels": 1, "color": "gray"}
    assert m["threshold"] > 0
    report = json.load(open(smoke_set / "report.json"))
    assert all(d <= 1e-4 for d in report["onnx_max_abs_diff"].values())
    assert report["flops_submodel"] <= report["flops_full"] / 3
    # The class-consistent selector (the default) takes the full model's probabilities, and
    # the report holds both selectors (the ablation) and the camera-like replay.
    assert m["selector"]["input"] == "probabilities"
    assert set(report["variants"]) == {"vae", "class"} and set(report["camera"]) == {"vae", "class"}
    assert [t["what"] for t in report["targets"]][0] == "full model accuracy"


def test_resume_does_not_retrain(smoke_set):
    log = open(smoke_set / "train.log").read()
    assert "resumed" not in log
    main(["fit", "--k", "3", "--out", str(smoke_set), *SMALL])
    log = open(smoke_set / "train.log").read()
    assert "full model: resumed after epoch 1" in log and "cachenet: resumed after epoch 2" in log
    assert "class-generator: resumed after epoch 2" in log


def test_rust_side_loads_the_export(smoke_set):
    edge = os.environ.get("CACHENET_EDGE_BIN") or shutil.which("cachenet-edge")
    if not edge:
        pytest.skip("set CACHENET_EDGE_BIN to the cachenet-edge binary (the README's test command does)")
    r = subprocess.run([edge, "--check", "--model-dir", str(smoke_set)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "smoke: ok" in r.stdout
