#!/usr/bin/env bash
# The ptxas resource report (registers, spills, shared memory) of every kernel in cuda/, as a
# Markdown table: compiles each file for sm_90 with -Xptxas -v (no GPU needed).
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC=${NVCC:-/usr/local/cuda/bin/nvcc}
for f in cuda/*.cu; do
  "$NVCC" -std=c++17 -arch=sm_90 -O3 -c -Iinclude -I/usr/include --expt-relaxed-constexpr \
    -Xptxas -v "$f" -o /dev/null 2>&1 | sed "s|^|$f: |"
done | /usr/bin/python3 -c '
import re, subprocess, sys
rows, cur = [], None
for line in sys.stdin:
    f, _, text = line.partition(": ")
    m = re.search(r"Compiling entry function .(\S+). for", text)
    if m:
        cur = {"file": f, "name": m.group(1)}
        continue
    m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)
    if m and cur:
        cur["spill"] = int(m.group(1)) + int(m.group(2))
    m = re.search(r"Used (\d+) registers(.*)", text)
    if m and cur:
        smem = re.search(r"(\d+) bytes smem", m.group(2))
        cur["regs"], cur["smem"] = int(m.group(1)), int(smem.group(1)) if smem else 0
        rows.append(cur)
        cur = None
names = subprocess.run(["c++filt"], input="\n".join(r["name"] for r in rows), capture_output=True, text=True).stdout.split("\n")
print("| file | kernel | registers | spill bytes | static smem |")
print("| --- | --- | --- | --- | --- |")
for r, n in zip(rows, names):
    n = re.sub(r"\(.*", "", n).replace("gossamer::", "")
    print("| %s | `%s` | %d | %d | %d |" % (r["file"], n, r["regs"], r.get("spill", 0), r["smem"]))
'
