#!/usr/bin/env bash
# One device visit (../shared/GPU.md), run on the GPU machine from the repository root.
# Prepare here (no -march=native: the binaries travel), carrying only what runs (64 MiB cap):
#   rm -rf build-gpu && cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 -DGOSSAMER_NATIVE=OFF -DGOSSAMER_PORTABLE=ON
#   cmake --build build-gpu -j2 --target gossamer gossamer_cuda_tests gossamer-bench
#   mkdir -p gpu-bin/tests && cp build-gpu/gossamer build-gpu/gossamer-bench gpu-bin/ &&
#     cp build-gpu/tests/gossamer_cuda_tests gpu-bin/tests/ && strip gpu-bin/gossamer* gpu-bin/tests/* &&
#     cp -r /usr/share/datasets/fashion-mnist gpu-bin/   # the quickstart agreement test's data (30 MB)
# The portable binaries need only glibc >= 2.36 (static libstdc++'s arc4random) and the image's
# cuBLAS; if they do not start there, build on the device (GPU.md, Plan B).
# then: run(command="bash bench/gpu-check.sh", carry=["gpu-bin"], timeout_s=580): the steps
# below are capped at 120 + 120 + 160 + 45 + 45 + 35 + 35 = 560 s.
# Order: agreement tests first (the verdict), then the benchmark and its peers, then the
# sanitizers and ncu on a short filter. Results land in $OUT and bench/results/.
# NOT YET RUN ON A GPU (written in sessions without one).
set -uo pipefail
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT" bench/results
B=${B:-gpu-bin}
export GOSSAMER_SOURCE_DIR=$PWD
[ -d /usr/share/datasets/fashion-mnist ] || export GOSSAMER_FASHION_MNIST=$PWD/$B/fashion-mnist
nvidia-smi -L | tee "$OUT/nvidia-smi.txt"
# The CUDA runtime is static; cuBLAS comes from the image's Python packages (GPU.md).
lib() { dirname "$(find / -name "$1" -print -quit 2>/dev/null)"; }
export LD_LIBRARY_PATH="$(lib libcublasLt.so.13):$(lib libcublas.so.13):${LD_LIBRARY_PATH:-}"
ldd $B/tests/gossamer_cuda_tests | grep "not found" | tee "$OUT/missing-libs.txt"
$B/gossamer devices | tee "$OUT/devices.txt"

echo "=== agreement tests"
timeout 120 $B/tests/gossamer_cuda_tests --gtest_output=json:"$OUT/cuda-tests.json" > "$OUT/cuda-tests.txt" 2>&1
echo "exit $?" >> "$OUT/cuda-tests.txt"
grep -E "^\[  (FAILED|PASSED|SKIPPED) |Failure|error" "$OUT/cuda-tests.txt" | head -40

echo "=== benchmark"
timeout 120 $B/gossamer-bench --backend cuda --workload a,b,m16,m64,m256,m1024,m4096 --export-curvature /tmp/gx \
  --out bench/results > "$OUT/bench.txt" 2>&1; echo "bench exit $?" >> "$OUT/bench.txt"
RESULT=$(ls -t bench/results/*.json 2>/dev/null | grep -v peers | head -1)
cp bench/results/*.json "$OUT/" 2>/dev/null

echo "=== PyTorch peers"
timeout 160 python3 bench/peers/torch_peers.py --gossamer "$RESULT" --export /tmp/gx --out bench/results \
  > "$OUT/peers.txt" 2>&1; echo "peers exit $?" >> "$OUT/peers.txt"
cp bench/results/*peers*.json "$OUT/" 2>/dev/null

echo "=== sanitizers (short filter)"
F='CudaBackendTest.LocalGradients*:CudaBackendTest.GossipAndUpdate*:CudaBackendTest.Curvature*'
if command -v compute-sanitizer > /dev/null; then
  timeout 45 compute-sanitizer --tool memcheck $B/tests/gossamer_cuda_tests --gtest_filter="$F" 2>&1 | tail -4 > "$OUT/memcheck.txt"
  timeout 45 compute-sanitizer --tool racecheck $B/tests/gossamer_cuda_tests --gtest_filter="$F" 2>&1 | tail -4 > "$OUT/racecheck.txt"
fi
if command -v ncu > /dev/null; then
  timeout 35 ncu --clock-control none -k regex:gossip_update -c 3 $B/gossamer-bench --backend cuda \
    --workload b --repeats 1 --calls 1 --no-curvature --out /tmp > "$OUT/ncu-gossip.txt" 2>&1
  # The largest GEMM of a step: workload (b)'s first-layer gradient (784 x 128 x 32, 1024 batched).
  timeout 35 ncu --clock-control none -k regex:gemm -c 2 $B/gossamer-bench --backend cuda \
    --workload b --repeats 1 --calls 1 --no-curvature --out /tmp > "$OUT/ncu-gemm.txt" 2>&1
fi

echo "=== summary"
tail -3 "$OUT/cuda-tests.txt"
grep -E "workload|forward|gossip|whole step|HVP|Hutchinson|power" "$OUT/bench.txt" | head -40
tail -15 "$OUT/peers.txt"
cat "$OUT/memcheck.txt" "$OUT/racecheck.txt" 2>/dev/null
