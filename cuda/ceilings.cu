// The card's ceilings, measured in the benchmark's own run (docs/ARCHITECTURE.md, "Checking on a GPU"): a large
// device-to-device copy (bytes read + written) and large square SGEMMs in FP32 and TF32
// through cuBLAS, each timed with CUDA events after warm-up, median of the repeats.
#include <algorithm>
#include <vector>

#include "device_array.cuh"
#include "gemm.cuh"
#include "gossamer/cuda.hpp"

namespace gossamer {
namespace {

template <class F>
double median_ms(cudaStream_t s, int repeats, F&& f) {
  cudaEvent_t a = nullptr, b = nullptr;
  CUDA_CHECK(cudaEventCreate(&a));
  CUDA_CHECK(cudaEventCreate(&b));
  std::vector<float> times;
  for (int i = 0; i < repeats + 2; ++i) {  // two warm-up runs
    CUDA_CHECK(cudaEventRecord(a, s));
    f();
    CUDA_CHECK(cudaEventRecord(b, s));
    CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    if (i >= 2) times.push_back(ms);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

}  // namespace

CudaCeilings measure_cuda_ceilings(int repeats) {
  CudaCeilings c;
  cudaStream_t s = nullptr;
  CUDA_CHECK(cudaStreamCreate(&s));
  {
    const size_t n = size_t(1) << 28;  // 1 GiB of floats each side: far beyond the 50 MB L2
    DeviceArray<float> src(n), dst(n);
    src.zero(s);
    const double ms = median_ms(s, repeats, [&] {
      CUDA_CHECK(
          cudaMemcpyAsync(dst.get(), src.get(), n * sizeof(float), cudaMemcpyDeviceToDevice, s));
    });
    c.copy_gb_per_s = 2.0 * double(n) * sizeof(float) / (ms / 1e3) / 1e9;
  }
  const int n = 8192;
  DeviceArray<float> a(size_t(n) * n), b(size_t(n) * n), out(size_t(n) * n);
  a.zero(s);
  b.zero(s);
  for (MathMode mode : {MathMode::Fp32, MathMode::Tf32}) {
    const Gemm gemm(s, mode);
    const double ms = median_ms(s, repeats, [&] {
      gemm.run(n, n, n, {a.get(), n, 0, false}, {b.get(), n, 0, false}, 0.f, out.get(), n, 0, 1);
    });
    const double tflops = 2.0 * n * double(n) * n / (ms / 1e3) / 1e12;
    (mode == MathMode::Fp32 ? c.sgemm_fp32_tflops : c.sgemm_tf32_tflops) = tflops;
  }
  cudaStreamDestroy(s);
  return c;
}

}  // namespace gossamer
