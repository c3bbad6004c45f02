// Entry points of the CUDA part that the host code and the tests call (built only where
// nvcc is found: GOSSAMER_HAVE_CUDA).
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "gossamer/backend.hpp"
#include "gossamer/cuda_plan.hpp"
#include "gossamer/partition.hpp"
#include "gossamer/topology.hpp"

namespace gossamer {

struct CudaOptions {
  // Replay the training step's gradient part from a CUDA Graph (captured on first use).
  bool graphs = true;
  // Fill every output buffer with NaN before the kernels that write it, so that an element a
  // kernel forgets to write shows up (agreement tests; slower).
  bool poison = false;
  // The GPU ordinal (an unsharded backend; a sharded one sets it per shard from setup.devices).
  int device = 0;
  // A CNN's fused paths (cuda/cnn.cu): CnnPaths::defaults(), the fastest measured (its comment);
  // CnnPaths::general() turns them all off (every convolution through im2col and cuBLAS, every
  // gradient zeroed and added to, no fusion: an on-GPU reference for the fused ones, which the
  // agreement tests compare with it).
  CnnPaths cnn_paths = CnnPaths::defaults();
};

// The CUDA backend (cuda/cuda_backend.cu): on GPU setup.devices[0] (0 when empty), or sharded
// over setup.devices and setup.processes (cuda/sharded_backend.cu). Checks the memory plan
// against free device memory before allocating; throws a clear error when no GPU is visible or
// a device does not exist.
std::unique_ptr<Backend> make_cuda_backend(const BackendSetup& setup, const CudaOptions& options);

// The card's ceilings for the benchmark: device-to-device copy (bytes read + written, GB/s)
// and 8192^3 SGEMM through cuBLAS in FP32 and TF32 (TFLOP/s), medians of `repeats` runs.
struct CudaCeilings {
  double copy_gb_per_s = 0, sgemm_fp32_tflops = 0, sgemm_tf32_tflops = 0;
};
CudaCeilings measure_cuda_ceilings(int repeats);

// Every worker's minibatch indices at `step`, drawn on the GPU with the same Philox
// stream as the CPU backend (philox.hpp): m x batch training-set indices.
std::vector<int64_t> cuda_sample_minibatches(const Partition& partition, uint64_t seed,
                                             int64_t step, int batch);

// One fused gossip + update step on the GPU over host arrays (m x ld floats, ld a multiple
// of 64): W <- P W - lr U (or P (W - lr U) with atc), buf <- mu buf + g + wd w. For the
// kernel's own agreement test; the backend keeps the arrays on the device.
void cuda_gossip_update(const Csr& mixing, int64_t ld, std::vector<float>& W,
                        const std::vector<float>& G, std::vector<float>& buf, double lr,
                        double momentum, double weight_decay, bool nesterov, bool atc);

// C = A B on the GPU through the backend's GEMM (row-major, A M x K, B K x N), in FP32 or
// TF32 math: the GEMM's own check that the math mode reaches cuBLAS.
std::vector<float> cuda_gemm(const std::vector<float>& A, const std::vector<float>& B, int M,
                             int N, int K, bool tf32);

// Softmax cross-entropy of rows x classes logits on the GPU, in place: loss per row, whether
// the top class is right, and the logits replaced by (softmax - onehot) * scale.
void cuda_softmax_xent(std::vector<float>& logits, const std::vector<int32_t>& labels, int classes,
                       float scale, std::vector<float>& loss, std::vector<unsigned char>& correct);

}  // namespace gossamer
