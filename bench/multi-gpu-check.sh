#!/usr/bin/env bash
# The multi-GPU visit (docs/ARCHITECTURE.md, "Shards"), for a machine with two or more GPUs, run
# from the repository root with the binaries gpu-check.sh --pack made:
#   run(command="bash bench/multi-gpu-check.sh", carry=["gpu-bin"], kind=<a multi-GPU kind>)
# Steps (each capped by `timeout`; everything lands in $OUT/multi-gpu.tar.gz and summary.txt):
#   tests    the sharded suite (CudaShardTest.*): on N GPUs NCCL and device copies agree with one
#            GPU to 1e-6 after 100 steps, for every topology kind and algorithm                   120
#   procs    the same run as 1 process on N GPUs and as N processes of 1 GPU each (NCCL through
#            the rendezvous file): the two metrics.jsonl agree (loss and accuracy to 1e-6)        120
#   scaling  steps/s of the quickstart model at m = 16,384 and 65,536 (ring and exponential) on
#            1 GPU and on all N: throughput against N x the one-GPU figure (goal: >= 90 %)       240
set -uo pipefail
B=${B:-gpu-bin}
OUT=${OUT:-/tmp/multi-gpu-check}
V="$OUT/visit"
mkdir -p "$V"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }
lib() { dirname "$(find / -name "$1" -print -quit 2>/dev/null)"; }
export LD_LIBRARY_PATH="$(lib libcublasLt.so.13):$(lib libcublas.so.13):$(lib libnccl.so.2):${LD_LIBRARY_PATH:-}"
export GOSSAMER_SOURCE_DIR=$PWD
FMNIST=/usr/share/datasets/fashion-mnist
[ -d $FMNIST ] || { FMNIST=$PWD/$B/fashion-mnist; export GOSSAMER_FASHION_MNIST=$FMNIST; }
QS="configs/quickstart.json --set data.path=$FMNIST"
N=$(nvidia-smi -L | wc -l)
ALL=$(seq -s, 0 $((N - 1)))
nvidia-smi -L | tee "$V/nvidia-smi.txt"
nvidia-smi topo -m > "$V/topology.txt" 2>&1
ldd $B/gossamer | grep "not found" | tee "$V/missing-libs.txt"
say "gossamer multi-gpu-check at $(cat $B/REVISION 2>/dev/null || echo unknown) on $N x $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
if (( N < 2 )); then say "one GPU visible: run bench/gpu-check.sh instead"; exit 1; fi

echo "=== tests"
timeout 120 $B/tests/gossamer_cuda_tests --gtest_filter='CudaShardTest.*' > "$V/shard-tests.txt" 2>&1
say "shard tests exit $?: $(grep -E '^\[  PASSED  \]|^\[  FAILED  \] [0-9]' "$V/shard-tests.txt" | tr '\n' ' ')"
grep -E "^\[  FAILED  \] [A-Z]|Failure" "$V/shard-tests.txt" | head -20 | tee -a "$SUMMARY"

echo "=== one process on $N GPUs, and $N processes"
COMMON="--set workers=64 --set train.steps=200 --set train.eval_every=100 --set train.checkpoint_every=100"
timeout 60 $B/gossamer run $QS $COMMON --devices $ALL --out "$V/one-process" > "$V/one-process.txt" 2>&1
say "1 process, devices $ALL: exit $? ($(grep -E '^  backend' "$V/one-process.txt"))"
RDV="$V/rendezvous-$$"
for r in $(seq 0 $((N - 1))); do
  timeout 90 $B/gossamer run $QS $COMMON --devices $r --world $N --rank $r --rendezvous "$RDV" \
    --rendezvous-timeout 60 --out "$V/processes" > "$V/rank$r.txt" 2>&1 &
done
wait
say "$N processes: $(tail -qn1 "$V"/rank*.txt | tr '\n' ' ')"
python3 - "$V/one-process" "$V/processes" <<'EOF' | tee -a "$SUMMARY"
import json, sys
def lines(d):
    return [json.loads(l) for l in open(d + "/metrics.jsonl")]
try:
    a, b = lines(sys.argv[1]), lines(sys.argv[2])
except Exception as e:
    print(f"processes vs one process: missing metrics ({e})"); sys.exit(0)
worst = 0.0
for x, y in zip(a, b):
    for k in ("train_loss", "test_loss", "test_acc", "consensus_distance"):
        if k in x and k in y and x[k] is not None:
            worst = max(worst, abs(x[k] - y[k]) / max(abs(x[k]), 1e-12))
ok = len(a) == len(b) and worst <= 1e-6
print(f"processes vs one process: {len(a)} and {len(b)} metric lines, worst relative difference {worst:.2e}: {'OK' if ok else 'FAIL'}")
EOF

echo "=== scaling"
for m in 16384 65536; do
  for topo in ring exponential; do
    for devs in 0 $ALL; do
      tag="m$m-$topo-$(echo $devs | tr , _)"
      timeout 60 $B/gossamer run $QS --backend cuda --set workers=$m --set partition.kind=shared \
        --set topology.name=$topo --set train.steps=50 --set train.eval_every=50 \
        --set train.eval_workers=false --set train.checkpoint_every=-1 --devices $devs \
        --out "$V/$tag" > "$V/$tag.txt" 2>&1
    done
    python3 - "$V" "m$m-$topo" "$N" "$(echo $ALL | tr , _)" <<'EOF' | tee -a "$SUMMARY"
import json, sys
v, tag, n, all_ = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
try:
    one = json.load(open(f"{v}/{tag}-0/summary.json"))["steps_per_second"]
    many = json.load(open(f"{v}/{tag}-{all_}/summary.json"))["steps_per_second"]
except Exception as e:
    print(f"{tag}: missing summary ({e})"); sys.exit(0)
# The same m on n GPUs: linear throughput is n x the one-GPU steps/s.
print(f"{tag}: {one:.1f} steps/s on 1 GPU, {many:.1f} on {n}: {100 * many / (n * one):.0f} % of linear")
EOF
  done
done
tar czf "$OUT/multi-gpu.tar.gz" -C "$OUT" visit
cat "$SUMMARY"
