// Softmax cross-entropy of a batch of logit rows, loss and gradient in one pass: one thread
// a row, through the same per-row function as the CPU (activations.hpp softmax_xent_row).
//   loss_i = logsumexp(z_i) - z_{i,y_i};  z_i <- (softmax(z_i) - onehot(y_i)) * scale
#include "cuda_check.cuh"
#include "gossamer/activations.hpp"
#include "gossamer/cuda.hpp"

namespace gossamer {

static __global__ void softmax_xent_f32(float* logits, const int32_t* labels, int64_t rows,
                                        int classes, float scale, float* loss,
                                        unsigned char* correct) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows) return;
  bool right = false;
  loss[i] = softmax_xent_row(logits + i * classes, classes, labels[i], scale, &right);
  correct[i] = right;
}

void cuda_softmax_xent(std::vector<float>& logits, const std::vector<int32_t>& labels, int classes,
                       float scale, std::vector<float>& loss, std::vector<unsigned char>& correct) {
  const int64_t rows = int64_t(labels.size());
  if (int64_t(logits.size()) != rows * classes)
    throw runtime_error("cuda_softmax_xent: logits must be rows x classes");
  float *d_logits = nullptr, *d_loss = nullptr;
  int32_t* d_labels = nullptr;
  unsigned char* d_correct = nullptr;
  const size_t n = std::max<size_t>(logits.size(), 1), r = std::max<int64_t>(rows, 1);
  CUDA_CHECK(cudaMalloc(&d_logits, n * sizeof(float)));
  CUDA_CHECK(cudaMalloc(&d_loss, r * sizeof(float)));
  CUDA_CHECK(cudaMalloc(&d_labels, r * sizeof(int32_t)));
  CUDA_CHECK(cudaMalloc(&d_correct, r));
  CUDA_CHECK(
      cudaMemcpy(d_logits, logits.data(), logits.size() * sizeof(float), cudaMemcpyHostToDevice));
  CUDA_CHECK(
      cudaMemcpy(d_labels, labels.data(), labels.size() * sizeof(int32_t), cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemset(d_loss, 0xFF, r * sizeof(float)));  // poison: an unwritten loss reads NaN
  constexpr int kBlock = 128;
  if (rows > 0) {
    softmax_xent_f32<<<unsigned(CEIL_DIV(rows, kBlock)), kBlock>>>(
        d_logits, d_labels, rows, classes, scale, d_loss, d_correct);
    CUDA_CHECK_LAUNCH();
  }
  loss.resize(rows);
  correct.resize(rows);
  CUDA_CHECK(
      cudaMemcpy(logits.data(), d_logits, logits.size() * sizeof(float), cudaMemcpyDeviceToHost));
  CUDA_CHECK(cudaMemcpy(loss.data(), d_loss, rows * sizeof(float), cudaMemcpyDeviceToHost));
  CUDA_CHECK(cudaMemcpy(correct.data(), d_correct, rows, cudaMemcpyDeviceToHost));
  cudaFree(d_logits);
  cudaFree(d_loss);
  cudaFree(d_labels);
  cudaFree(d_correct);
}

}  // namespace gossamer
