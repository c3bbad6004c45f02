#!/usr/bin/python3
"""Plots of a gossamer sweep folder (gossamer sweep ... --out DIR), as PNGs in DIR/plots/.

    /usr/bin/python3 bench/plot.py DIR

Needs Debian's python3-matplotlib and python3-numpy (installed by ./dev.sh). Each figure
carries the sweep's name and the hash of its sweep.json (first 12 hex digits of SHA-256).
  accuracy.png      test accuracy of w-bar vs total batch, per algorithm (mean +- std over seeds)
  curvature.png     1/2 tr(H Xi) and the Hessian trace of w-bar at the end vs total batch
  consensus.png     consensus distance over training, per D-SGD topology, a line per total batch
  calibration.png   reliability diagram at the end: the workers as an ensemble vs w-bar
  smoothing.png     gradient smoothing ratio ||mean_k grad(w_k) - grad(w-bar)|| / ||grad(w-bar)|| over training
"""
import csv
import hashlib
import json
import os
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def fail(message):
    print(f"plot.py: error: {message}", file=sys.stderr)
    sys.exit(2)


def load(folder):
    csv_path = os.path.join(folder, "sweep.csv")
    record_path = os.path.join(folder, "sweep.json")
    if not os.path.exists(csv_path) or not os.path.exists(record_path):
        fail(f"{folder}: expected sweep.csv and sweep.json (a folder written by gossamer sweep)")
    with open(record_path, "rb") as f:
        raw = f.read()
    record = json.loads(raw)
    tag = f"{record['name']}  sweep.json sha256 {hashlib.sha256(raw).hexdigest()[:12]}"
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["label"] = row.get("algorithm.name", "") + (
            f" {row['topology.name']}" if row.get("algorithm.name") == "dsgd" and row.get("topology.name") else "")
        metrics = os.path.join(folder, row["folder"], "metrics.jsonl")
        row["metrics"] = [json.loads(l) for l in open(metrics)] if os.path.exists(metrics) else []
    return rows, tag


def number(row, key):
    try:
        return float(row[key])
    except (KeyError, ValueError):
        return float("nan")


def finish(fig, tag, path):
    fig.text(0.99, 0.005, tag, ha="right", va="bottom", fontsize=7, color="gray")
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")


def by_label_and_batch(rows, key):
    groups = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["status"] == "completed":
            groups[r["label"]][int(number(r, "total_batch"))].append(number(r, key))
    return groups


def mean_std_plot(ax, rows, key, ylabel, scale=1.0):
    for label, by_batch in sorted(by_label_and_batch(rows, key).items()):
        batches = sorted(by_batch)
        means = np.array([np.nanmean(by_batch[b]) for b in batches]) * scale
        stds = np.array([np.nanstd(by_batch[b]) for b in batches]) * scale
        ax.errorbar(batches, means, yerr=stds, marker="o", capsize=3, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("total batch (samples per step, all workers)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def main():
    if len(sys.argv) != 2:
        fail("usage: bench/plot.py SWEEP_DIR")
    folder = sys.argv[1]
    rows, tag = load(folder)
    out = os.path.join(folder, "plots")
    os.makedirs(out, exist_ok=True)

    fig, ax = plt.subplots(figsize=(6, 4))
    mean_std_plot(ax, rows, "test_acc", "test accuracy of w-bar (%)", 100)
    ax.set_title("Test accuracy vs total batch (mean +- std over seeds)")
    finish(fig, tag, os.path.join(out, "accuracy.png"))

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    mean_std_plot(axes[0], rows, "half_tr_h_xi", "1/2 tr(H(w-bar) Xi)  (loss units)")
    axes[0].set_yscale("symlog", linthresh=1e-6)
    axes[0].set_title("Implicit regularizer of D-SGD at the end")
    mean_std_plot(axes[1], rows, "hessian_trace", "tr H(w-bar)  (Hutchinson)")
    axes[1].set_title("Hessian trace of w-bar at the end")
    finish(fig, tag, os.path.join(out, "curvature.png"))

    # Training curves of completed D-SGD points (a diverged run's last lines are not data).
    dsgd = [r for r in rows if r.get("algorithm.name") == "dsgd" and r["metrics"] and r["status"] == "completed"]
    topologies = sorted({r["label"] for r in dsgd})
    if topologies:
        fig, axes = plt.subplots(1, len(topologies), figsize=(4.5 * len(topologies), 3.8), squeeze=False)
        for ax, label in zip(axes[0], topologies):
            for r in sorted((r for r in dsgd if r["label"] == label), key=lambda r: number(r, "total_batch")):
                steps = [m["step"] for m in r["metrics"] if m["step"] > 0]
                cd = [m["consensus_distance"] for m in r["metrics"] if m["step"] > 0]
                ax.plot(steps, cd, marker=".", label=f"total batch {int(number(r, 'total_batch'))}")
            ax.set_yscale("log")
            ax.set_xlabel("step")
            ax.set_ylabel("consensus distance (1/m) sum ||w_k - w-bar||^2")
            ax.set_title(label)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        finish(fig, tag, os.path.join(out, "consensus.png"))

        fig, axes = plt.subplots(1, len(topologies), figsize=(4.5 * len(topologies), 4), squeeze=False)
        for ax, label in zip(axes[0], topologies):
            candidates = [r for r in dsgd if r["label"] == label and "ensemble" in r["metrics"][-1]]
            if not candidates:
                continue
            r = max(candidates, key=lambda r: number(r, "total_batch"))
            ens = r["metrics"][-1]["ensemble"]
            centers = (np.arange(15) + 0.5) / 15
            for name, key, offset in (("workers as ensemble", "workers", -0.012), ("w-bar", "mean_model", 0.012)):
                s = ens[key]
                keep = np.array(s["bin_count"]) > 0
                ax.bar(centers[keep] + offset, np.array(s["bin_accuracy"])[keep], width=0.024,
                       label=f"{name}: ECE {s['ece']:.4f}, NLL {s['nll']:.4f}")
            ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect calibration")
            ax.set_xlabel("confidence (top predicted probability)")
            ax.set_ylabel("accuracy in the bin")
            ax.set_title(f"{label}, total batch {int(number(r, 'total_batch'))}")
            ax.legend(fontsize=7)
        finish(fig, tag, os.path.join(out, "calibration.png"))

        fig, ax = plt.subplots(figsize=(6, 4))
        for r in sorted(dsgd, key=lambda r: (r["label"], number(r, "total_batch"))):
            # Step 0 is left out: all workers start equal, so the ratio is rounding only.
            pts = [(m["step"], m["gradient_smoothing"]["ratio"]) for m in r["metrics"]
                   if "gradient_smoothing" in m and m["step"] > 0]
            if pts:
                ax.plot(*zip(*pts), marker=".", label=f"{r['label']}, batch {int(number(r, 'total_batch'))}")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("||mean_k grad L(w_k) - grad L(w-bar)|| / ||grad L(w-bar)||")
        ax.set_title("Gradient smoothing by D-SGD (claim 2)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
        finish(fig, tag, os.path.join(out, "smoothing.png"))


if __name__ == "__main__":
    main()
