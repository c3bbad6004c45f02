// Every worker's initial weights drawn on the device (docs/ARCHITECTURE.md, "Rules of scale": no m x d
// array on the host): W[k][i] = initial_weight(...) of philox.hpp for the weights of each layer,
// from stream (seed, Init, same_init ? 0 : k), the same function the CPU backend calls; biases
// and the row padding 0. One thread an element, in double as on the host, then rounded to float.
#include "gossamer/philox.hpp"
#include "kernels.cuh"

namespace gossamer {

static __global__ void init_weights_f32(float* W, int first_worker, int m, int64_t ld,
                                        InitLayers layers, bool kaiming, uint64_t seed,
                                        bool same_init) {
  GRID_STRIDE(idx, int64_t(m) * ld) {
    const int k = first_worker + int(idx / ld);  // the worker's global id
    const int64_t i = idx % ld;
    float v = 0.f;
    for (int l = 0; l < layers.count; ++l)
      if (i >= layers.w_offset[l] && i < layers.b_offset[l])
        v = float(initial_weight(kaiming, layers.in[l], layers.out[l], seed,
                                 same_init ? 0u : uint32_t(k), uint64_t(i)));
    W[idx] = v;
  }
}

void launch_init_weights(float* W, int first_worker, int m, int64_t ld, const InitLayers& layers,
                         bool kaiming, uint64_t seed, bool same_init, cudaStream_t s) {
  const int64_t n = int64_t(m) * ld;
  if (n == 0) return;
  init_weights_f32<<<linear_blocks(n), kLinearBlock, 0, s>>>(W, first_worker, m, ld, layers,
                                                             kaiming, seed, same_init);
  CUDA_CHECK_LAUNCH();
}

}  // namespace gossamer
