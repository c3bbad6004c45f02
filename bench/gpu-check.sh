#!/usr/bin/env bash
# One device visit (docs/ARCHITECTURE.md, "Checking on a GPU"), run on the GPU machine from the
# repository root.
# Prepare here (no -march=native: the binaries travel), carrying only what runs (64 MiB cap):
#   rm -rf build-gpu && cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
#     -DGOSSAMER_NATIVE=OFF -DGOSSAMER_PORTABLE=ON -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc
#   cmake --build build-gpu -j2 --target gossamer gossamer_cuda_tests gossamer_tests gossamer-bench
#   bash bench/gpu-check.sh --pack     # fills gpu-bin/ (stripped binaries + Fashion-MNIST, ~50 MB)
# then: run(command="bash bench/gpu-check.sh", carry=["gpu-bin"], timeout_s=580), or with
# SKIP=peers when the peers were measured at a commit with the same step code.
# Steps (each capped by `timeout`; a step whose cap would end past BUDGET = 540 s is skipped, so
# the visit ends within it; the expected total is ~120 s without the peers and ~280 s with them:
# the fourth visit's tests, runs and benchmark took 80 s):
#   tests     the GPU agreement suite (with the sharded suite: 2-4 shards on the one GPU and
#             NCCL with one rank against one shard; the CNN's gradients, steps, HVPs and
#             evaluations for four networks, and its quickstart through the trainer), and the
#             trainer, checkpoint and plan suites with backend auto (so on the GPU: checkpoints
#             through the pinned buffer), then sweep --jobs 3 thirty times           170+60+30
#   cnn       configs/quickstart-cnn.json on the GPU: accuracy, steps/s, wall time              50
#   study     configs/paper/claims-cnn-full.json's smallest and largest batch for 300 steps: the
#             cost a run, to size the full study                                                 60
#   runs      the quickstart on cuda and on cpu (accuracy within 0.5 points), backend auto picks
#             the GPU, a 1024-worker run whose steps/s must match its progress lines, and
#             16,384 and 65,536 workers (setup phases, step time)                          160+80
#   bench     plan --fit on the card; gossamer-bench, workloads a, b and the CNN's c (16 workers)
#             and c1024 (and both again on the general path only, --cnn-off all) with the curvature rows
#             (HVP vs gradient, Hutchinson, power, Lanczos, every worker's trace and top
#             eigenvalue, spectral density) and the shard rows (halo bytes, 2 and 4 shards'
#             gossip on the one GPU against one shard), then the m16 ... m65536 series (setup,
#             ns a worker-step, checkpoint GB/s), FP32; a, b in TF32                       90+60+30
#   peers     the PyTorch peers on the same card, workloads PEER_WORKLOADS (default a,b,c,c1024;
#             skip with SKIP=peers)                                                             190
#   profile   the kernels of a step of workloads c and c1024 (nsys, else ncu's first kernels)    2 x 45
#   sanitize  compute-sanitizer memcheck + racecheck on a short filter (the kernels, init,
#             the checkpoint stream through the pinned buffer, the sampler, the CNN's two
#             agreement tests; SANITIZE_FILTER replaces it). racecheck did not finish the CNN's
#             tests in 45 or 60 s on the H200: give it SANITIZE_TIMEOUT=150 once   2 x SANITIZE_TIMEOUT
#   ncu       kernel names of the TF32 GEMM test; the gossip and GEMM kernels of workload b,
#             the ceilings skipped (--no-ceilings) so the profiler reaches them                  3 x 30
#   paths     workloads c and c1024 with every CNN fused path on (--cnn-off none), then each alone
#             off (--cnn-off NAME): what each one gains, beside the bench step's default
#             (small_convs off) and all-off lines; last, so it runs when the visit has time left
#                                                                                            6 x 18
# SKIP="peers ncu" leaves steps out. Everything lands in $OUT/visit.tar.gz, plus summary.txt,
# the bench JSONs (a and b, the m-series, TF32), peers.json and cuda-tests.txt beside it (at
# most 8 files come back).
set -uo pipefail
B=${B:-gpu-bin}

if [ "${1:-}" = "--pack" ]; then
  rm -rf "$B" && mkdir -p "$B/tests"
  cp build-gpu/gossamer build-gpu/gossamer-bench "$B/"
  cp build-gpu/tests/gossamer_cuda_tests build-gpu/tests/gossamer_tests "$B/tests/"
  strip "$B"/gossamer* "$B"/tests/*
  cp -r /usr/share/datasets/fashion-mnist "$B/"
  git describe --always --dirty > "$B/REVISION"
  du -sh "$B"
  exit 0
fi

OUT=${OUT:-/tmp/gpu-check}
V="$OUT/visit"
rm -rf "$V"  # a machine may keep an earlier visit's files
mkdir -p "$V" bench/results
SKIP=${SKIP:-}
# A step runs unless SKIP names it or it could end past the visit's time box (BUDGET seconds,
# default 540, counted from the script's start): the caps below add up to more than a visit may
# take, so a slow step costs the later ones, never the visit.
BUDGET=${BUDGET:-540}
declare -A CAP=([tests]=260 [cnn]=60 [study]=70 [runs]=240 [bench]=220 [peers]=200 [profile]=100 [sanitize]=120 [ncu]=90 [paths]=115)
[ "${BENCH:-}" = cnn ] && CAP[bench]=150
# PEER_TIMEOUT / SANITIZE_TIMEOUT: the peers' and each sanitizer's own caps, for a short visit.
PEER_TIMEOUT=${PEER_TIMEOUT:-190}
SANITIZE_TIMEOUT=${SANITIZE_TIMEOUT:-60}
CAP[peers]=$((PEER_TIMEOUT + 10))
CAP[sanitize]=$((2 * SANITIZE_TIMEOUT))
want() {
  [[ " $SKIP " == *" $1 "* ]] && return 1
  if (( SECONDS + ${CAP[$1]} > BUDGET )); then
    echo "skipped $1: it could end past the ${BUDGET} s time box (${SECONDS} s used)" | tee -a "$OUT/summary.txt"
    return 1
  fi
}
export GOSSAMER_SOURCE_DIR=$PWD
FMNIST=/usr/share/datasets/fashion-mnist
[ -d $FMNIST ] || { FMNIST=$PWD/$B/fashion-mnist; export GOSSAMER_FASHION_MNIST=$FMNIST; }
QS="configs/quickstart.json --set data.path=$FMNIST"
nvidia-smi -L | tee "$V/nvidia-smi.txt"
# The CUDA runtime is static; cuBLAS and NCCL come from the image's Python packages.
lib() { dirname "$(find / -name "$1" -print -quit 2>/dev/null)"; }
export LD_LIBRARY_PATH="$(lib libcublasLt.so.13):$(lib libcublas.so.13):$(lib libnccl.so.2):${LD_LIBRARY_PATH:-}"
ldd $B/tests/gossamer_cuda_tests | grep "not found" | tee "$V/missing-libs.txt"
$B/gossamer devices | tee "$V/devices.txt"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }
say "gossamer gpu-check at $(cat $B/REVISION 2>/dev/null || echo unknown) on $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"

if want tests; then
  echo "=== agreement tests"
  timeout 170 $B/tests/gossamer_cuda_tests --gtest_filter="${TEST_FILTER:-*}" \
    --gtest_output=json:"$V/cuda-tests.json" > "$OUT/cuda-tests.txt" 2>&1
  say "cuda tests exit $?: $(grep -E '^\[  PASSED  \]|^\[  FAILED  \] [0-9]' "$OUT/cuda-tests.txt" | tr '\n' ' ')"
  grep -E "^\[  FAILED  \] [A-Z]|Failure|GEMM .* x|TF32 gradients" "$OUT/cuda-tests.txt" | head -30 | tee -a "$SUMMARY"
  grep -E "^cnn " "$OUT/cuda-tests.txt" | tail -70 | tee -a "$SUMMARY"
  # The trainer suite with backend auto: on this machine that is the CUDA backend (the NaN and
  # Inf detection for every activation, steps/s without checkpoints, auto with math tf32), and
  # sweep --jobs 3 with three CUDA backends on the card at once (the same metrics as --jobs 1).
  timeout 60 $B/tests/gossamer_tests --gtest_filter='TrainerTest.*:CheckpointTest.*:CudaPlanTest.*:SweepTest.Jobs*:SweepPlanTest.*' \
    > "$V/trainer-tests.txt" 2>&1
  say "trainer tests on auto (GPU) exit $?: $(grep -E '^\[  PASSED  \]|^\[  FAILED  \] [0-9]' "$V/trainer-tests.txt" | tr '\n' ' ')"
  grep -E "^\[  FAILED  \] [A-Z]|Failure" "$V/trainer-tests.txt" | head -10 | tee -a "$SUMMARY"
  # sweep --jobs 3 again and again: three threads' backends set up, capture their steps' graphs
  # and free their buffers at nearby times (cuda/capture_lock.cuh; at baf2c59, before that lock,
  # it failed once on the H200 and passed alone). Each run about 0.5 s there.
  timeout 30 $B/tests/gossamer_tests --gtest_filter='SweepTest.Jobs*' --gtest_repeat=30 \
    > "$V/sweep-jobs-repeated.txt" 2>&1
  say "sweep --jobs 3, 30 times (GPU) exit $?: $(grep -c '^\[       OK \] SweepTest.Jobs' "$V/sweep-jobs-repeated.txt") passed, $(grep -c '^\[  FAILED  \] SweepTest.Jobs.*ms)$' "$V/sweep-jobs-repeated.txt") failed"
  grep -m3 -E "failed:|Failure" "$V/sweep-jobs-repeated.txt" | tee -a "$SUMMARY"
fi

if want cnn; then
  echo "=== cnn quickstart"
  # configs/quickstart-cnn.json on the GPU (1,500 steps, 16 workers): accuracy and wall time
  # against the CPU's 90.06 % in 2 min 17 s on the 2-core VM.
  timeout 50 $B/gossamer run configs/quickstart-cnn.json --set data.path=$FMNIST --backend cuda \
    --out "$V/qs-cnn" > "$V/qs-cnn.txt" 2>&1
  python3 - "$V/qs-cnn" <<'EOF' | tee -a "$SUMMARY"
import json, sys
try:
    s = json.load(open(sys.argv[1] + "/summary.json"))
    print(f"cnn quickstart on cuda: test acc {s['final']['test_acc']*100:.2f} %, {s['steps_per_second']:.0f} steps/s, "
          f"setup {s['setup_time_s']:.1f} s, wall {s['wall_time_s']:.1f} s")
except Exception as e:
    print(f"cnn quickstart on cuda: no summary ({e})")
EOF
  grep -E "^  backend|rror" "$V/qs-cnn.txt" | tail -3 | tee -a "$SUMMARY"
fi

if want study; then
  echo "=== the CNN claims study's cost"
  # configs/paper/claims-cnn-full.json cut to its smallest and largest batch (8 and 512 a worker),
  # C-SGD and D-SGD on the ring, one seed, 300 steps with its evaluations (every 100) and its
  # curvature at the end: steps/s, setup, evaluation and curvature time a run, from which the
  # full study's time is computed (docs/REPRODUCING.md).
  python3 - "$FMNIST" <<'EOF'
import json, sys
s = json.load(open("configs/paper/claims-cnn-full.json"))
s["name"] = "claims-cnn-timing"
s["set"].update({"train.steps": 300, "train.eval_every": 100, "curvature.every": 300,
                 "optimizer.warmup_steps": 3, "data.path": sys.argv[1]})
s["grid"] = {"optimizer.batch_size": [8, 512], "seed": [1]}
s["points"] = s["points"][:2]
json.dump(s, open("configs/paper/claims-cnn-timing.json", "w"), indent=1)
EOF
  timeout 60 $B/gossamer sweep configs/paper/claims-cnn-timing.json --out "$V/study" > "$V/study.txt" 2>&1
  echo "study exit $?" >> "$V/study.txt"
  python3 - "$V/study" <<'EOF' | tee -a "$SUMMARY"
import glob, json, os, sys
for path in sorted(glob.glob(sys.argv[1] + "/*/summary.json")):
    s = json.load(open(path))
    curv = [json.loads(l)["curvature"]["time_s"] for l in open(os.path.dirname(path) + "/metrics.jsonl")
            if '"curvature"' in l]
    print(f"study {os.path.basename(os.path.dirname(path))}: {s['steps_per_second']:.0f} steps/s, setup "
          f"{s['setup_time_s']:.2f} s, eval {s['eval_time_s']:.2f} s, curvature {sum(curv):.2f} s, "
          f"wall {s['wall_time_s']:.1f} s, test acc {s['final']['test_acc']:.4f}")
EOF
  tail -2 "$V/study.txt" | tee -a "$SUMMARY"
fi

if want runs; then
  echo "=== runs"
  # The quickstart on the GPU and on the CPU: the same data stream and math, accuracy within 0.5 points.
  for be in cuda cpu; do
    timeout 40 $B/gossamer run $QS --backend $be \
      --out "$V/qs-$be" > "$V/qs-$be.txt" 2>&1
  done
  python3 - "$V" <<'EOF' | tee -a "$SUMMARY"
import json, sys
v = sys.argv[1]
s = {be: json.load(open(f"{v}/qs-{be}/summary.json")) for be in ("cuda", "cpu")}
acc = {be: s[be]["final"]["test_acc"] for be in s}
d = abs(acc["cuda"] - acc["cpu"]) * 100
print(f"quickstart: cuda {acc['cuda']*100:.2f} % ({s['cuda']['steps_per_second']:.0f} steps/s), "
      f"cpu {acc['cpu']*100:.2f} % ({s['cpu']['steps_per_second']:.0f} steps/s): "
      f"{d:.2f} points apart: {'OK' if d <= 0.5 else 'FAIL (> 0.5)'}")
EOF
  timeout 20 $B/gossamer run $QS --set train.steps=20 --out "$V/qs-auto" > "$V/qs-auto.txt" 2>&1
  say "auto: $(grep -E '^  backend' "$V/qs-auto.txt")"
  # 1024 workers, a checkpoint at the end: steps/s from the summary against the progress lines.
  timeout 60 $B/gossamer run $QS --backend cuda --set workers=1024 \
    --set train.steps=200 --set train.eval_every=100 --set train.eval_workers=false \
    --out "$V/m1024" > "$V/m1024.txt" 2>&1
  python3 - "$V/m1024" <<'EOF' | tee -a "$SUMMARY"
import json, sys
s = json.load(open(sys.argv[1] + "/summary.json"))
print(f"m1024: {s['steps_per_second']:.1f} steps/s (summary), setup {s['setup_time_s']:.1f} s, "
      f"eval {s['eval_time_s']:.2f} s, checkpoints {s['checkpoint_time_s']:.2f} s, wall {s['wall_time_s']:.1f} s")
EOF
  grep -E "^step" "$V/m1024.txt" | tee -a "$SUMMARY"
  # Many workers: 16,384 and 65,536 of the quickstart model (shared partition: more workers
  # than samples), no checkpoint; setup by phase, then the step time.
  for m in 16384 65536; do
    timeout 40 $B/gossamer run $QS --backend cuda --set workers=$m --set partition.kind=shared \
      --set train.steps=20 --set train.eval_every=20 --set train.eval_workers=false \
      --set train.checkpoint_every=-1 --out "$V/m$m" > "$V/m$m.txt" 2>&1
    echo "m$m exit $?" >> "$V/m$m.txt"
    python3 - "$V/m$m" <<'EOF' | tee -a "$SUMMARY"
import json, sys
try:
    s = json.load(open(sys.argv[1] + "/summary.json"))
except Exception as e:
    print(f"{sys.argv[1]}: no summary ({e})"); sys.exit(0)
phases = ", ".join(f"{k} {v:.2f} s" for k, v in s["setup_phases_s"].items())
print(f"{sys.argv[1].split('/')[-1]}: setup {s['setup_time_s']:.1f} s ({phases}); "
      f"{1000 / s['steps_per_second']:.2f} ms a step; test acc {s['final']['test_acc']:.4f}")
EOF
    tail -2 "$V/m$m.txt" | tee -a "$SUMMARY"
  done
fi

RESULT=""
if want bench; then
  echo "=== benchmark"
  $B/gossamer plan $QS --fit | tee -a "$SUMMARY"
  # The CNN's workloads (c with the curvature rows, c1024 without), then a and b with every
  # curvature row (the peers compare against this JSON; the file is rewritten after each
  # workload, so a time box keeps what was measured), then the m-series on its own, so that a
  # slow curvature row cannot cost the series. BENCH=cnn stops after the CNN's.
  rm -rf /tmp/bench-main && mkdir -p /tmp/bench-main
  timeout 60 $B/gossamer-bench --backend cuda --workload c --shards 2,4 \
    --export-curvature /tmp/gx --out /tmp/bench-c > "$V/bench-c.txt" 2>&1; echo "bench c exit $?" >> "$V/bench-c.txt"
  timeout 40 $B/gossamer-bench --backend cuda --workload c1024 --no-curvature \
    --out /tmp/bench-c1024 > "$V/bench-c1024.txt" 2>&1; echo "bench c1024 exit $?" >> "$V/bench-c1024.txt"
  grep -E "workload|forward|gossip|whole step|HVP|Hutchinson|power|every worker|density|setup|exit" \
    "$V/bench-c.txt" "$V/bench-c1024.txt" | tee -a "$SUMMARY"
  # The same two CNN workloads on the general path only (CudaOptions::cnn_paths all off): what
  # the fused paths (small convolutions without im2col, stored gradients, fused activations, the
  # first weight gradient through its pool, kept columns) gain together; the paths step, each.
  timeout 50 $B/gossamer-bench --backend cuda --workload c,c1024 --cnn-off all --no-curvature \
    --out "$V/bench-general" > "$V/bench-general.txt" 2>&1; echo "bench general exit $?" >> "$V/bench-general.txt"
  grep -E "workload|forward|whole step|exit" "$V/bench-general.txt" | sed 's/^/general path: /' | tee -a "$SUMMARY"
  if [ "${BENCH:-}" != cnn ]; then
    timeout 120 $B/gossamer-bench --backend cuda --workload a,b --shards 2,4 \
      --export-curvature /tmp/gx --out /tmp/bench-main > "$V/bench.txt" 2>&1; echo "bench exit $?" >> "$V/bench.txt"
  fi
  # One result file for the peers' ratio table: the workloads of all three runs.
  python3 - "$(cat $B/REVISION 2>/dev/null)" /tmp/bench-main /tmp/bench-c /tmp/bench-c1024 <<'EOF'
import glob, json, sys
merged = None
for folder in sys.argv[2:]:
    for path in glob.glob(folder + "/*.json"):
        r = json.load(open(path))
        if merged is None:
            merged, name = r, path.split("/")[-1]
        else:
            merged["workloads"].update(r["workloads"])
if merged:
    # The binaries' own revision is their build's; the packed tree's (git describe) is in REVISION.
    if sys.argv[1]:
        merged["git_revision"] = sys.argv[1]
    json.dump(merged, open(sys.argv[2] + "/" + name, "w"), indent=2)
EOF
  RESULT=$(ls -t /tmp/bench-main/*.json 2>/dev/null | head -1)
  [ -n "$RESULT" ] && cp "$RESULT" "$OUT/bench.json" && cp "$RESULT" bench/results/
  if [ "${BENCH:-}" != cnn ]; then
    timeout 60 $B/gossamer-bench --backend cuda --workload m16,m64,m256,m1024,m4096,m16384,m65536 \
      --out /tmp/mseries > "$V/bench-m.txt" 2>&1; echo "bench m-series exit $?" >> "$V/bench-m.txt"
    cp /tmp/mseries/*.json "$OUT/bench-m.json" 2>/dev/null
    timeout 30 $B/gossamer-bench --backend cuda --math tf32 --workload a,b --no-curvature \
      --out /tmp/tf32 > "$V/bench-tf32.txt" 2>&1; echo "bench tf32 exit $?" >> "$V/bench-tf32.txt"
    cp /tmp/tf32/*.json "$OUT/bench-tf32.json" 2>/dev/null
    grep -E "workload|forward|gossip|whole step|HVP|Hutchinson|power|every worker|density|setup|checkpoint|exit" \
      "$V/bench.txt" "$V/bench-m.txt" | tee -a "$SUMMARY"
    grep -E "workload|forward|whole step|exit" "$V/bench-tf32.txt" | tee -a "$SUMMARY"
  fi
fi

if want peers && [ -n "$RESULT" ]; then
  echo "=== PyTorch peers"
  timeout $PEER_TIMEOUT python3 bench/peers/torch_peers.py --gossamer "$RESULT" --export /tmp/gx --out bench/results \
    --workloads "${PEER_WORKLOADS:-a,b,c,c1024}" \
    > "$V/peers.txt" 2>&1; echo "peers exit $?" >> "$V/peers.txt"
  cp bench/results/*peers*.json "$OUT/peers.json" 2>/dev/null
  tail -24 "$V/peers.txt" | tee -a "$SUMMARY"
fi

if want profile; then
  echo "=== profile of workloads c's and c1024's kernels"
  # Where a CNN step's time goes, kernel by kernel, at 16 and at 1,024 workers: nsys where the
  # image has it, else ncu (its first kernels: the set-up's few, then whole steps).
  for w in c c1024; do
    P="$B/gossamer-bench --backend cuda --workload $w --repeats 3 --calls 3 --no-curvature --no-ceilings --out /tmp/prof-out"
    if command -v nsys > /dev/null; then
      timeout 45 nsys profile --force-overwrite true -o /tmp/prof-$w $P > "$V/profile-run-$w.txt" 2>&1
      timeout 20 nsys stats --report cuda_gpu_kern_sum --format csv /tmp/prof-$w.nsys-rep > "$V/profile-$w.csv" 2>&1
      python3 - "$V/profile-$w.csv" "$w" <<'EOF' | tee -a "$SUMMARY"
import csv, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 8]
head, body = rows[0], rows[1:]
print(f"profile of {sys.argv[2]} (nsys): % time, total ms, calls, avg us, kernel")
for r in body[:18]:
    d = dict(zip(head, r))
    print(f"  {float(d['Time (%)']):5.1f} {float(d['Total Time (ns)'])/1e6:9.2f} {d['Instances']:>6} "
          f"{float(d['Avg (ns)'])/1e3:9.1f}  {d['Name'][:90]}")
EOF
    else
      timeout 45 ncu --clock-control none --metrics gpu__time_duration.sum -c $([ $w = c ] && echo 400 || echo 200) \
        $P > "$V/profile-$w.txt" 2>&1
      python3 - "$V/profile-$w.txt" "$w" <<'EOF' | tee -a "$SUMMARY"
import re, sys, collections
total, count, name = collections.Counter(), collections.Counter(), None
for line in open(sys.argv[1]):
    m = re.match(r"^  (\S.*?) \(\d+, \d+, \d+\)x\(\d+, \d+, \d+\)", line)
    if m:
        name = m.group(1)[:90]
    m = re.search(r"gpu__time_duration.sum\s+(\S+)\s+([\d.,]+)", line)
    if m and name:
        # ncu prints ns/us/ms (older versions nsecond/usecond/msecond); an unknown unit stops
        # the table rather than being read as microseconds (the 2026-11-27 visit's tables were).
        scale = {"ns": 1e-3, "nsecond": 1e-3, "us": 1, "usecond": 1, "ms": 1e3, "msecond": 1e3,
                 "s": 1e6, "second": 1e6}[m.group(1)]
        total[name] += float(m.group(2).replace(",", "")) * scale
        count[name] += 1
print(f"profile of {sys.argv[2]} (ncu, its first kernels): total us, calls, kernel")
for n, t in total.most_common(18):
    print(f"  {t:10.1f} {count[n]:5d}  {n}")
EOF
    fi
  done
fi

if want sanitize && command -v compute-sanitizer > /dev/null; then
  echo "=== sanitizers (short filter)"
  F='CudaBackendTest.LocalGradients*:CudaBackendTest.GossipAndUpdate*:CudaBackendTest.Curvature*:CudaBackendTest.NonFinite*:CudaBackendTest.VectorOperations*:CudaBackendTest.AugmentedMinibatches*'
  F="$F:CudaBackendTest.DeviceInitialization*:CudaBackendTest.ResumedTrainerRunIsBitIdentical:CudaTest.Sampling*:CudaShardTest.TheShardedGossipIsBitIdentical"
  F="$F:CudaBackendTest.CnnGradients*:CudaBackendTest.CnnCurvature*"
  F=${SANITIZE_FILTER:-$F}
  timeout $SANITIZE_TIMEOUT compute-sanitizer --tool memcheck $B/tests/gossamer_cuda_tests --gtest_filter="$F" > "$V/memcheck.txt" 2>&1
  timeout $SANITIZE_TIMEOUT compute-sanitizer --tool racecheck $B/tests/gossamer_cuda_tests --gtest_filter="$F" > "$V/racecheck.txt" 2>&1
  say "memcheck: $(grep -E 'ERROR SUMMARY' "$V/memcheck.txt" | tail -1) $(grep -E '^\[  (PASSED|FAILED)  \] [0-9]' "$V/memcheck.txt" | tr '\n' ' ')"
  say "racecheck: $(grep -E 'RACECHECK SUMMARY|ERROR SUMMARY' "$V/racecheck.txt" | tail -1) $(grep -E '^\[  (PASSED|FAILED)  \] [0-9]' "$V/racecheck.txt" | tr '\n' ' ')"
fi

if want ncu && command -v ncu > /dev/null; then
  echo "=== ncu"
  # Which kernels cuBLAS runs for FP32 and TF32 (tensor-core kernel names carry "tf32").
  timeout 30 ncu --clock-control none --metrics gpu__time_duration.sum \
    $B/tests/gossamer_cuda_tests --gtest_filter='CudaTest.GemmTf32*' > "$V/ncu-tf32-kernels.txt" 2>&1
  say "GEMM kernels seen: $(grep -oE '^  [A-Za-z_0-9]*(gemm|Gemm|xmma|gemv)[A-Za-z_0-9]*' "$V/ncu-tf32-kernels.txt" | sort | uniq -c | tr -s ' ' | tr '\n' ';')"
  timeout 30 ncu --clock-control none -k regex:gossip_update -c 3 $B/gossamer-bench --backend cuda \
    --workload b --repeats 1 --calls 1 --no-curvature --no-ceilings --out /tmp > "$V/ncu-gossip.txt" 2>&1
  timeout 30 ncu --clock-control none -k 'regex:gemm|xmma|sm90' -c 4 $B/gossamer-bench --backend cuda \
    --workload b --repeats 1 --calls 1 --no-curvature --no-ceilings --out /tmp > "$V/ncu-gemm.txt" 2>&1
  for f in gossip gemm; do
    say "ncu $f: $(grep -E '^  [a-zA-Z_].*\(' "$V/ncu-$f.txt" | head -2 | tr -s ' ' | tr '\n' ';') $(grep -E 'Memory Throughput|DRAM Throughput|Compute \(SM\) Throughput' "$V/ncu-$f.txt" | head -3 | tr -s ' ' | tr '\n' ';')"
  done
fi

if want paths; then
  echo "=== the CNN's fused paths: all on, then each alone off"
  for p in none small_convs stored_grads fused_acts grad_through_pool kept_columns; do
    timeout 18 $B/gossamer-bench --backend cuda --workload c,c1024 --cnn-off $p --no-curvature \
      --no-ceilings --repeats 5 --calls 3 --out "$V/bench-without-$p" > "$V/bench-without-$p.txt" 2>&1
    echo "bench without $p exit $?" >> "$V/bench-without-$p.txt"
    grep -E "^workload|forward|whole step|exit" "$V/bench-without-$p.txt" | sed "s/^/--cnn-off $p: /" | tee -a "$SUMMARY"
  done
fi

rm -rf "$V"/*/checkpoint.bin
tar -czf "$OUT/visit.tar.gz" -C "$OUT" visit && rm -rf "$V"
echo "=== summary"
cat "$SUMMARY"
