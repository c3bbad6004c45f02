#!/usr/bin/python3
"""Plots of a gossamer sweep folder (gossamer sweep ... --out DIR) or of one run folder
(gossamer run ... --out DIR), as PNGs in DIR/plots/.

    /usr/bin/python3 bench/plot.py DIR

Needs Debian's python3-matplotlib and python3-numpy (installed by ./dev.sh). Each figure
carries the sweep's name and the hash of its sweep.json (first 12 hex digits of SHA-256).
  accuracy.png      test accuracy of w-bar vs total batch, per algorithm (mean +- std over seeds)
  curvature.png     1/2 tr(H Xi) and the Hessian trace of w-bar at the end vs total batch
  consensus.png     consensus distance over training, per D-SGD topology, a line per total batch
  calibration.png   reliability diagram at the end: the workers as an ensemble vs w-bar
  smoothing.png     gradient smoothing ratio ||mean_k grad(w_k) - grad(w-bar)|| / ||grad(w-bar)|| over training
A run folder (config.json and metrics.jsonl) gets:
  training.png      training and test loss, test accuracy of w-bar and the workers' range, consensus distance
  curvature.png     w-bar's Hessian trace (+- its standard error), top eigenvalue, 1/2 tr(H Xi) over training,
                    and the workers' spread when curvature.workers was on (when curvature was measured)
  workers.png       every worker's trace against its top eigenvalue at the last measurement (worker_curvature.jsonl)
  density.png       the Hessian's spectral density at each measurement (spectral_density.jsonl)
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


def jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_run(folder):
    with open(os.path.join(folder, "config.json"), "rb") as f:
        raw = f.read()
    tag = f"{json.loads(raw).get('name', '')}  config.json sha256 {hashlib.sha256(raw).hexdigest()[:12]}"
    lines = jsonl(os.path.join(folder, "metrics.jsonl"))
    if not lines:
        fail(f"{folder}/metrics.jsonl: no lines")
    out = os.path.join(folder, "plots")
    os.makedirs(out, exist_ok=True)

    def series(key, sub=None, skip_first=False):
        pts = [(m["step"], m[key] if sub is None else m[key][sub]) for m in lines
               if m.get(key) is not None and (sub is None or sub in m[key]) and not (skip_first and m["step"] == 0)]
        return zip(*pts) if pts else ([], [])

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].plot(*series("train_loss"), marker=".", label="training loss (workers' minibatches)")
    axes[0].plot(*series("test_loss"), marker=".", label="test loss of w-bar")
    axes[0].set_ylabel("cross-entropy")
    steps, acc = series("test_acc")
    axes[1].plot(steps, 100 * np.array(acc), marker=".", label="w-bar")
    if any("worker_test_acc" in m for m in lines):
        s_, lo = series("worker_test_acc", "min")
        _, hi = series("worker_test_acc", "max")
        axes[1].fill_between(s_, 100 * np.array(lo), 100 * np.array(hi), alpha=0.3, label="workers (min to max)")
    axes[1].set_ylabel("test accuracy (%)")
    axes[2].plot(*series("consensus_distance", skip_first=True), marker=".")
    axes[2].set_yscale("log")
    axes[2].set_ylabel("consensus distance (1/m) sum ||w_k - w-bar||^2")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=8)
    finish(fig, tag, os.path.join(out, "training.png"))

    curv = [(m["step"], m["curvature"]) for m in lines if "curvature" in m]
    if curv:
        fig, axes = plt.subplots(1, 3, figsize=(15, 4))
        have = [(s, c) for s, c in curv if "trace" in c]
        if have:
            s_, c_ = zip(*have)
            axes[0].errorbar(s_, [c["trace"]["value"] for c in c_], yerr=[c["trace"]["std_error"] for c in c_],
                             marker="o", capsize=3, label="w-bar (Hutchinson +- SE)")
        have = [(s, c) for s, c in curv if "workers" in c and "trace" in c["workers"]]
        if have:
            s_, c_ = zip(*have)
            axes[0].fill_between(s_, [c["workers"]["trace"]["min"] for c in c_],
                                 [c["workers"]["trace"]["max"] for c in c_], alpha=0.3, label="workers (min to max)")
        axes[0].set_ylabel("Hessian trace")
        have = [(s, c) for s, c in curv if "top_eigenvalues" in c]
        if have:
            s_, c_ = zip(*have)
            axes[1].plot(s_, [c["top_eigenvalues"]["values"][0] for c in c_], marker="o", label="w-bar")
        have = [(s, c) for s, c in curv if "workers" in c and "top_eigenvalue" in c["workers"]]
        if have:
            s_, c_ = zip(*have)
            axes[1].fill_between(s_, [c["workers"]["top_eigenvalue"]["min"] for c in c_],
                                 [c["workers"]["top_eigenvalue"]["max"] for c in c_], alpha=0.3,
                                 label="workers (min to max)")
        axes[1].set_ylabel("top Hessian eigenvalue")
        have = [(s, c["half_tr_h_xi"]) for s, c in curv if "half_tr_h_xi" in c]
        if have:
            axes[2].plot(*zip(*have), marker="o")
        axes[2].set_ylabel("1/2 tr(H(w-bar) Xi)")
        for ax in axes:
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
        finish(fig, tag, os.path.join(out, "curvature.png"))

    path = os.path.join(folder, "worker_curvature.jsonl")
    if os.path.exists(path):
        last = jsonl(path)[-1]
        if "trace" in last and "top_eigenvalue" in last:
            fig, ax = plt.subplots(figsize=(6, 4.5))
            ax.errorbar(last["top_eigenvalue"], last["trace"], yerr=last["trace_std_error"], fmt="o", capsize=2)
            ax.set_xlabel("top Hessian eigenvalue")
            ax.set_ylabel("Hessian trace (Hutchinson +- SE)")
            ax.set_title(f"every worker's own model at step {last['step']} ({len(last['trace'])} workers)")
            ax.grid(alpha=0.3)
            finish(fig, tag, os.path.join(out, "workers.png"))

    path = os.path.join(folder, "spectral_density.jsonl")
    if os.path.exists(path):
        dens = jsonl(path)
        fig, ax = plt.subplots(figsize=(7, 4.5))
        colors = plt.cm.viridis(np.linspace(0, 1, len(dens)))
        for color, d in zip(colors, dens):
            ax.plot(d["grid"], np.maximum(d["density"], 1e-12), color=color, label=f"step {d['step']}")
        ax.set_yscale("log")
        ax.set_ylim(bottom=1e-6)
        ax.set_xlabel("eigenvalue of H(w-bar)")
        ax.set_ylabel("density (stochastic Lanczos quadrature)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        finish(fig, tag, os.path.join(out, "density.png"))


def main():
    if len(sys.argv) != 2:
        fail("usage: bench/plot.py SWEEP_DIR | RUN_DIR")
    folder = sys.argv[1]
    if os.path.exists(os.path.join(folder, "metrics.jsonl")) and os.path.exists(os.path.join(folder, "config.json")):
        plot_run(folder)
        return
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
