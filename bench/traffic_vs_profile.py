#!/usr/bin/python3
"""Each kernel's distinct bytes (gossamer-traffic's JSON, emulated) over its time on a GPU (an ncu
profile-kernels.txt of bench/gpu-check.sh, one gpu__time_duration a launch): a lower bound on the
DRAM bandwidth the kernel reached, beside its load and store efficiency, for one local-gradient
pass of the profile (from a gather_rows_f32 launch to the next record_loss_f32).

  /usr/bin/python3 bench/traffic_vs_profile.py TRAFFIC.json PROFILE.txt [--pass N]

Both must be of the same commit and workload (c: the CNN, 16 workers): the bytes are counted on
the emulated device, the times measured on the GPU. Standard library only.
"""
import argparse
import json
import re
import sys


# ncu's time units (older versions spell them out) in microseconds.
MICROSECONDS = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3,
                "s": 1e6, "second": 1e6}


def launches(profile_path):
    """(kernel base name, microseconds) a launch, in order; cuBLAS's kernels as "GEMM"."""
    out, name = [], None
    for line in open(profile_path):
        line = line.strip()
        if "Context" in line and "Device" in line:
            m = re.match(r"(?:void )?(?:gossamer::)?([A-Za-z0-9_]+)[<(]", line)
            name = m.group(1) if m and not line.startswith(("sm", "cutlass", "void cutlass")) else "GEMM"
            continue
        m = re.match(r"gpu__time_duration\.sum\s+(\S+)\s+([\d.,]+)", line)
        if m and name:
            if m.group(1) not in MICROSECONDS:  # never drop or misread a launch
                sys.exit(f"{profile_path}: unknown time unit {m.group(1)!r} in {line!r}")
            out.append((name, float(m.group(2).replace(",", "")) * MICROSECONDS[m.group(1)]))
            name = None
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("traffic")
    p.add_argument("profile")
    p.add_argument("--pass", dest="which", type=int, default=0,
                   help="which local-gradient pass of the profile (0: the first)")
    a = p.parse_args()
    runs = launches(a.profile)
    starts = [i for i, (n, _) in enumerate(runs) if n == "gather_rows_f32"]
    passes = [(s, e) for s in starts for e in [next((j for j in range(s + 1, len(runs))
                                                      if runs[j][0] == "record_loss_f32"), None)]
              if e is not None and all(runs[k][0] != "sample_minibatches_i64" for k in range(s, e))]
    if a.which >= len(passes):
        sys.exit(f"{a.profile}: {len(passes)} local-gradient passes, no pass {a.which}")
    s, e = passes[a.which]
    us = {}
    for n, t in runs[s:e + 1]:
        us[n] = us.get(n, 0.0) + t
    step = json.load(open(a.traffic))["step"]
    print(f"traffic {a.traffic} ({json.load(open(a.traffic))['git_revision']}), profile {a.profile}, "
          f"launches {s}..{e}")
    print(f"{'kernel':26s} {'us':>8s} {'MB':>8s} {'GB/s':>7s} {'load eff':>9s} {'store eff':>9s}")
    # One line a kernel as the profile names it: a template's instantiations (small_weight_grad_f32
    # <0> and <1>) share their time there, so their bytes are added and the efficiencies are the
    # larger one's.
    kernels = {}
    for k in step["kernels"]:
        base = k["kernel"].strip("(").split("<")[0]
        mb = (k["distinct_bytes_read"] + k["distinct_bytes_written"]) / 1e6
        total_mb, widest = kernels.get(base, (0.0, None))
        if widest is None or mb > (widest["distinct_bytes_read"] + widest["distinct_bytes_written"]) / 1e6:
            widest = k
        kernels[base] = (total_mb + mb, widest)
    total_us = 0.0
    for base, (mb, k) in sorted(kernels.items(), key=lambda kv: -us.get(kv[0], 0)):
        if base not in us:
            continue
        total_us += us[base]
        print(f"{base:26s} {us[base]:8.1f} {mb:8.2f} {mb / us[base] * 1e3:7.0f} "
              f"{k['loads']['efficiency']:9.3f} {k['stores']['efficiency']:9.3f}")
    print(f"{'GEMM (cuBLAS)':26s} {us.get('GEMM', 0.0):8.1f}")
    print(f"total {total_us + us.get('GEMM', 0.0):.1f} us")


if __name__ == "__main__":
    main()
