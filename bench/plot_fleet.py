"""p99 miss latency against cameras, one line per edge count, from cachenet-bench fleet's JSON:
python3 bench/plot_fleet.py bench/results/fleet/fleet.json (writes fleet-p99.png beside it)."""

import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(path):
    levels = json.load(open(path))
    fig, ax = plt.subplots(figsize=(6, 4))
    for edges in sorted({lv["edges"] for lv in levels}):
        pts = sorted((lv["cameras"], lv["p99_ms"]) for lv in levels if lv["edges"] == edges)
        ax.plot([c for c, _ in pts], [p for _, p in pts], marker="o",
                label=f"{edges} edge{'s' if edges > 1 else ''}")
    ax.axhline(100, color="grey", linestyle="--", linewidth=1, label="100 ms")
    ax.set_xlabel("cameras")
    ax.set_ylabel("p99 miss latency (ms)")
    ax.set_yscale("log")
    ax.legend()
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(os.path.dirname(path), "fleet-p99.png"), dpi=120)


if __name__ == "__main__":
    main(sys.argv[1])
