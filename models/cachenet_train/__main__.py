"""CLI: python -m cachenet_train {fetch,fit,replay,vectors} ..."""
from __future__ import annotations

import argparse
import logging
import os
import sys


def _logging(path: str | None):
    handlers = [logging.StreamHandler(sys.stderr)]
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        handlers.append(logging.FileHandler(path))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", handlers=handlers,
                        force=True)


def cmd_fetch(a):
    from . import data
    for name in a.what:
        if name == "fashion-mnist":
            print(data.fetch_fashion_mnist())
        elif name == "cifar10-sample":
            print(data.fetch_foolbox_cifar10())
        else:
            sys.exit(f"unknown dataset {name!r} (fashion-mnist, cifar10-sample)")


def cmd_fit(a):
    import numpy as np
    from . import data, export, report, train
    from .nets import Selector
    _logging(os.path.join(a.out, "train.log"))
    if a.dataset == "fashion-mnist" and not a.data_root:
        data.fetch_fashion_mnist()
    tr = data.load_dataset(a.dataset, "train", a.data_root)
    te = data.load_dataset(a.dataset, "test", a.data_root)
    cfg = train.Config(dataset=a.dataset, k=a.k, epochs_full=a.epochs_full, epochs=a.epochs, nu=a.nu,
                       batch=a.batch, limit=a.limit, test_limit=a.test_limit, seed=a.seed, threads=a.threads,
                       bf16=not a.fp32, tau=a.tau, gamma=a.gamma)
    full, vae, gen_net, mean, std, history, test = train.fit(cfg, tr, te, a.out)
    shape = tuple(test.x.shape[1:])
    ev = report.evaluate(cfg, full, vae, gen_net, test)
    y = ev["y"]
    full_acc = float((ev["full_pred"] == y).mean())
    rows = report.sweep(ev, report.sequence(y, "grouped", cfg.seed))
    threshold = a.threshold if a.threshold else report.choose_threshold(rows, full_acc)["threshold"]
    samples = test.x[:8].cpu().numpy()
    diffs = export.export_all(a.out, a.name or os.path.basename(os.path.abspath(a.out)), a.version,
                              tr.classes, mean, std, shape, full.cpu(), Selector(vae).cpu(), gen_net.cpu(), cfg,
                              threshold, samples)
    summary = report.write_report(a.out, cfg, tr.classes, history, ev, full, gen_net, shape, diffs)
    logging.info("full accuracy %.4f; CacheNet grouped replay at T=%s: accuracy %.4f hit rate %.4f",
                 summary["full_accuracy"], summary["threshold"], summary["grouped"]["accuracy"],
                 summary["grouped"]["hit_rate"])


def cmd_replay(a):
    from . import data, replay
    if a.dataset == "fashion-mnist" and not a.data_root:
        data.fetch_fashion_mnist()
    ds = data.load_dataset(a.dataset, a.split, a.data_root)
    idx = replay.sequence(ds.labels, a.order, a.seed)
    if a.limit:
        idx = idx[:a.limit] if a.order != "grouped" else _spread(ds.labels, idx, a.limit)
    print(replay.write_frames(ds.images, ds.labels, ds.classes, idx, a.out))


def _spread(labels, idx, limit):
    """First limit/C frames of every label group, keeping the grouped order."""
    import numpy as np
    classes = np.unique(labels)
    per = max(1, limit // len(classes))
    return np.concatenate([idx[labels[idx] == c][:per] for c in classes])


def cmd_vectors(a):
    import json
    from . import export, maths
    sigma = a.sigma if a.sigma else maths.sigma_eq13(a.k, a.gamma, a.tau)
    with open(a.out, "w") as f:
        json.dump(export.selector_vectors(a.k, sigma, a.tau, a.gamma), f, indent=1)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m cachenet_train", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="fetch datasets into $CACHENET_DATA (~/.cache/cachenet/data)")
    f.add_argument("what", nargs="+", help="fashion-mnist, cifar10-sample")
    f.set_defaults(fn=cmd_fetch)
    f = sub.add_parser("fit", help="train the full model and CacheNet, export ONNX + manifest + report")
    f.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "cifar10", "folder"])
    f.add_argument("--data-root")
    f.add_argument("--k", type=int, default=4)
    f.add_argument("--out", required=True)
    f.add_argument("--name")
    f.add_argument("--version", default="1.0.0")
    f.add_argument("--epochs-full", type=int, default=10)
    f.add_argument("--epochs", type=int, default=10)
    f.add_argument("--nu", type=int, default=5)
    f.add_argument("--batch", type=int, default=128)
    f.add_argument("--tau", type=float, default=0.3)
    f.add_argument("--gamma", type=float, default=0.3)
    f.add_argument("--threshold", type=float, default=0.0, help="default entropy threshold (0: from the sweep)")
    f.add_argument("--limit", type=int, default=0, help="train on this many images (smoke runs)")
    f.add_argument("--test-limit", type=int, default=0)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--threads", type=int, default=0)
    f.add_argument("--fp32", action="store_true", help="disable bf16 autocast")
    f.set_defaults(fn=cmd_fit)
    f = sub.add_parser("replay", help="write a replay sequence as PNG frames + labels.csv")
    f.add_argument("--dataset", default="fashion-mnist")
    f.add_argument("--data-root")
    f.add_argument("--split", default="test")
    f.add_argument("--order", default="grouped", choices=["grouped", "segments", "shuffled"])
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--limit", type=int, default=0)
    f.add_argument("--out", required=True)
    f.set_defaults(fn=cmd_replay)
    f = sub.add_parser("vectors", help="selector test vectors for given K, tau, gamma")
    f.add_argument("--k", type=int, required=True)
    f.add_argument("--tau", type=float, default=0.3)
    f.add_argument("--gamma", type=float, default=0.3)
    f.add_argument("--sigma", type=float, default=0.0)
    f.add_argument("--out", required=True)
    f.set_defaults(fn=cmd_vectors)
    a = p.parse_args(argv)
    a.fn(a)


if __name__ == "__main__":
    main()
