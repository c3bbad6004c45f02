#!/usr/bin/python3
"""Mean and standard deviation over seeds of the sweep.csv rows of one or more sweep folders
(the same points run with different seeds), as a Markdown table.

  bench/seed_table.py bench/results/paper-claims-reduced-lowlr bench/results/paper-claims-reduced-lowlr-seeds

Rows are grouped by algorithm, topology and total batch; a point that did not complete is
counted in the `runs` column but not in the means.
"""
import csv
import statistics
import sys

METRICS = [("test_acc", "test acc (w̄)", 100.0, "%.2f %%"), ("generalization_gap", "gen. gap", 1.0, "%.4f"),
           ("half_tr_h_xi", "½tr(HΞ)", 1.0, "%.4g"), ("hessian_trace", "tr H", 1.0, "%.1f"),
           ("consensus_distance", "consensus dist.", 1.0, "%.3g")]


def main(folders):
    groups = {}
    for folder in folders:
        with open(f"{folder}/sweep.csv") as f:
            for row in csv.DictReader(f):
                key = (row["algorithm.name"], row.get("topology.name", ""), int(row["total_batch"]))
                groups.setdefault(key, []).append(row)
    head = ["algorithm", "total batch", "runs (completed)"] + [m[1] + " mean ± std" for m in METRICS]
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for (alg, topo, batch), rows in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
        done = [r for r in rows if r["status"] == "completed"]
        cells = [alg + (" " + topo if topo else ""), str(batch), f"{len(rows)} ({len(done)})"]
        for key, _, scale, fmt in METRICS:
            vals = [scale * float(r[key]) for r in done if r.get(key) not in ("", None)]
            if not vals:
                cells.append("–")
            elif len(vals) == 1:
                cells.append(fmt % vals[0])
            else:
                cells.append((fmt % statistics.mean(vals)) + " ± " + (fmt % statistics.stdev(vals)).replace(" %", "") )
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
