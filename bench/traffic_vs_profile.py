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


def launches(profile_path):
    """(kernel base name, microseconds) a launch, in order; cuBLAS's kernels as "GEMM"."""
    out, name = [], None
    for line in open(profile_path):
        line = line.strip()
        if "Context" in line and "Device" in line:
            m = re.match(r"(?:void )?(?:gossamer::)?([A-Za-z0-9_]+)[<(]", line)
            name = m.group(1) if m and not line.startswith(("sm", "cutlass", "void cutlass")) else "GEMM"
            continue
        m = re.match(r"gpu__time_duration\.sum us ([\d.]+)", line)
        if m and name:
            out.append((name, float(m.group(1))))
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
    total_us = 0.0
    for k in sorted(step["kernels"], key=lambda k: -us.get(k["kernel"].strip("(").split("<")[0], 0)):
        base = k["kernel"].strip("(").split("<")[0]
        if base not in us:
            continue
        mb = (k["distinct_bytes_read"] + k["distinct_bytes_written"]) / 1e6
        total_us += us[base]
        print(f"{base:26s} {us[base]:8.1f} {mb:8.2f} {mb / us[base] * 1e3:7.0f} "
              f"{k['loads']['efficiency']:9.3f} {k['stores']['efficiency']:9.3f}")
    print(f"{'GEMM (cuBLAS)':26s} {us.get('GEMM', 0.0):8.1f}")
    print(f"total {total_us + us.get('GEMM', 0.0):.1f} us")


if __name__ == "__main__":
    main()
