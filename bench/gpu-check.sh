#!/usr/bin/env bash
# One device visit (../shared/GPU.md): run on the GPU machine from the repository root,
# with build-gpu/ carried (built here with the commands below). Copies logs into $OUT.
#   cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 -DGOSSAMER_NATIVE=OFF
#   cmake --build build-gpu -j2 --target gossamer gossamer_cuda_tests gossamer-bench
# NOT YET RUN ON A GPU: written for the first session that is lent one.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
nvidia-smi -L | tee "$OUT/nvidia-smi.txt"
# The CUDA runtime is static; cuBLAS/NCCL (not used yet) come from the image's Python packages.
lib() { dirname "$(find / -name "$1" -print -quit 2>/dev/null)"; }
export LD_LIBRARY_PATH="$(lib libcublasLt.so.13):$(lib libnccl.so.2):${LD_LIBRARY_PATH:-}"
ldd build-gpu/tests/gossamer_cuda_tests | grep "not found" && echo "missing libraries" | tee -a "$OUT/summary.txt"
./build-gpu/gossamer devices | tee "$OUT/devices.txt"
./build-gpu/tests/gossamer_cuda_tests 2>&1 | tee "$OUT/cuda-tests.txt" | tail -30
if command -v compute-sanitizer > /dev/null; then
  compute-sanitizer --tool memcheck ./build-gpu/tests/gossamer_cuda_tests 2>&1 | tail -5 | tee "$OUT/memcheck.txt"
  compute-sanitizer --tool racecheck ./build-gpu/tests/gossamer_cuda_tests 2>&1 | tail -5 | tee "$OUT/racecheck.txt"
fi
echo "--- summary"; grep -E "PASSED|FAILED|SKIPPED" "$OUT/cuda-tests.txt" | tail -5
