#!/usr/bin/env python3
"""Plots for cachenet-bench: modes.png (bar chart of the modes, paper Fig 8) and sweep.png
(FPS, hit rate and accuracy versus threshold, paper Fig 7).  usage: plot.py results.json"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

path = sys.argv[1]
out = os.path.dirname(os.path.abspath(path))
r = json.load(open(path))
modes = r["modes"]
fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
names = [m["mode"] for m in modes]
a1.bar(names, [m["fps"] for m in modes], color="tab:blue")
a1.set_ylabel("FPS")
a2.bar(names, [100 * m["accuracy"] for m in modes], color="tab:green")
a2.set_ylabel("accuracy (%)")
lo = min(100 * m["accuracy"] for m in modes)
a2.set_ylim(max(0, lo - 5), 100)
s = r["settings"]
fig.suptitle(f"{s['sequence']}, {s['frames']} frames, device CPU {s['device_cpu']}, link {(s['link'] or {}).get('name', 'none')}")
fig.tight_layout()
fig.savefig(os.path.join(out, "modes.png"), dpi=110)
if r["sweep"]:
    sw = r["sweep"]
    t = [x["threshold"] for x in sw]
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ax.plot(t, [100 * x["hit_rate"] for x in sw], "o-", label="hit rate (%)")
    ax.plot(t, [100 * x["accuracy"] for x in sw], "s-", label="accuracy (%)")
    ax2 = ax.twinx()
    ax2.plot(t, [x["fps"] for x in sw], "^--", color="tab:red", label="FPS")
    ax.set_xlabel("entropy threshold T (nats)")
    ax2.set_ylabel("FPS")
    ax.legend(loc="lower right", fontsize=8)
    ax2.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "sweep.png"), dpi=110)
