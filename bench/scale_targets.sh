#!/usr/bin/env bash
# The CPU scale targets: 65,536 workers of a softmax regression set up and run 5 steps
# (configs/scale/tiny-65536.json), and 4,096 workers with d = 25,450 run 5 steps and write their
# checkpoint (configs/scale/d25450-4096.json) within a peak resident memory of 2.5 x the float32
# size of W plus 600 MB. Writes bench/results/DATE-cpu-scale-targets.json with the machine, each
# run's wall time, setup phases, peak memory and the limit it is held to.
#   bash bench/scale_targets.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-build}/gossamer
OUT=bench/results/$(date +%F)-cpu-scale-targets.json
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
for c in tiny-65536 d25450-4096; do
  /usr/bin/time -f "%e %M" -o "$TMP/$c.time" "$BIN" run configs/scale/$c.json --backend cpu \
    --out "$TMP/$c" > "$TMP/$c.log"
done
/usr/bin/python3 - "$TMP" "$OUT" <<'PY'
import json, os, platform, sys
tmp, out = sys.argv[1], sys.argv[2]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
result = {"machine": {"cpu": cpu, "cores": os.cpu_count()}, "runs": {}}
for name in ("tiny-65536", "d25450-4096"):
    wall, peak_kb = open(f"{tmp}/{name}.time").read().split()
    s = json.load(open(f"{tmp}/{name}/summary.json"))
    run = {"config": f"configs/scale/{name}.json", "wall_s": float(wall), "peak_rss_bytes": int(peak_kb) * 1024,
           "setup_s": s["setup_time_s"], "setup_phases_s": s["setup_phases_s"], "status": s["status"]}
    if name == "tiny-65536":
        run["targets"] = {"setup_s_below": 8, "wall_s_below": 30}
        run["met"] = run["setup_s"] < 8 and run["wall_s"] < 30
    else:
        w_bytes = 4096 * 25472 * 4  # rows padded to 256 bytes
        run["checkpoint_bytes"] = os.path.getsize(f"{tmp}/{name}/checkpoint.bin")
        run["targets"] = {"peak_rss_bytes_below": 2.5 * w_bytes + 600e6, "w_float32_bytes": w_bytes}
        run["met"] = run["peak_rss_bytes"] < 2.5 * w_bytes + 600e6
    result["runs"][name] = run
    print(f"{name}: wall {run['wall_s']:.2f} s, setup {run['setup_s']:.2f} s, peak {run['peak_rss_bytes']/1e6:.0f} MB: "
          f"{'met' if run['met'] else 'NOT met'} {run['targets']}")
json.dump(result, open(out, "w"), indent=2)
print("wrote", out)
PY
