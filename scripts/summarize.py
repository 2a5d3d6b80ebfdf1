#!/usr/bin/env python3
"""Summarise `gst-launch-1.0 -m ... cachenetclassify ...` output against a labels.csv:
hits, misses, swaps, accuracy, FPS.  usage: summarize.py LOG LABELS.csv [WALL_SECONDS [REFERENCE]]
REFERENCE names what labels.csv holds: "labels" (accuracy) or a model (agreement with it)."""
import csv
import re
import sys

FIELD = re.compile(r"([a-z-]+)=\((\w+)\)(\"[^\"]*\"|[^,;]+)")


def parse(line):
    out = {}
    for k, t, v in FIELD.findall(line):
        v = v.strip('"')
        out[k] = int(v) if t in ("int", "guint64") else (v == "true" if t == "boolean" else v)
    return out


def main():
    log, labels = sys.argv[1], sys.argv[2]
    wall = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    reference = sys.argv[4] if len(sys.argv) > 4 else "labels"
    rows = [parse(l) for l in open(log, errors="replace") if "cachenet-result" in l]
    truth = {int(r["frame"]): int(r["class_id"]) for r in csv.DictReader(open(labels))}
    if not rows:
        sys.exit("no cachenet-result messages in " + log)
    n = len(rows)
    hits = sum(r["hit"] for r in rows)
    edge = sum(r["source"] == "edge" for r in rows)
    degraded = sum(r["degraded"] for r in rows)
    swaps = sum(1 for a, b in zip(rows, rows[1:]) if a["submodel"] != b["submodel"])
    correct = sum(r["class-id"] == truth.get(r["frame"], -2) for r in rows)
    lat = sorted(r["latency-us"] for r in rows)
    print(f"frames      {n}")
    print(f"hits        {hits} ({100 * hits / n:.1f} %)")
    print(f"misses      {n - hits} (answered by the edge: {edge}, degraded: {degraded})")
    print(f"swaps       {swaps}")
    if reference == "labels":
        print(f"accuracy    {100 * correct / n:.2f} %")
    else:
        print(f"agreement   {100 * correct / n:.2f} % with {reference} (top-1)")
    print(f"latency     median {lat[n // 2]} us, p99 {lat[min(n - 1, n * 99 // 100)]} us per frame")
    if wall:
        print(f"throughput  {n / wall:.1f} FPS end to end (decode included, {wall:.1f} s)")


if __name__ == "__main__":
    main()
