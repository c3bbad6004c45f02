// Softmax cross-entropy of a batch of logit rows, loss and gradient in one pass: one thread
// a row, through the same per-row function as the CPU (activations.hpp softmax_xent_row).
//   loss_i = logsumexp(z_i) - z_{i,y_i};  z_i <- (softmax(z_i) - onehot(y_i)) * scale
// With the R-forward rz_i of the logits (Hessian-vector products, as host/hvp.cpp):
//   R{dL/dz_i} = p_i .* (rz_i - <p_i, rz_i>) * scale,  p_i = softmax(z_i)
#include "device_array.cuh"
#include "gossamer/activations.hpp"
#include "gossamer/cuda.hpp"
#include "kernels.cuh"

namespace gossamer {

static __global__ void softmax_xent_f32(float* logits, float* rlogits, const int32_t* labels,
                                        int64_t y_stride, int rows_per_model, int64_t rows,
                                        int classes, float scale, float* loss,
                                        unsigned char* correct) {
  GRID_STRIDE(i, rows) {
    const int64_t k = i / rows_per_model, r = i % rows_per_model;
    const int y = labels[k * y_stride + r];
    float* z = logits + i * classes;
    bool right = false;
    loss[i] = softmax_xent_row(z, classes, y, scale, &right);
    if (correct) correct[i] = right;
    if (!rlogits) continue;
    float* rz = rlogits + i * classes;
    // p = z / scale + onehot: the CPU's order (host/hvp.cpp).
    const float inv = 1.f / scale;
    float dot = 0.f;
    for (int c = 0; c < classes; ++c) dot += (z[c] * inv + (c == y ? 1.f : 0.f)) * rz[c];
    for (int c = 0; c < classes; ++c) {
      const float p = z[c] * inv + (c == y ? 1.f : 0.f);
      rz[c] = p * (rz[c] - dot) * scale;
    }
  }
}

void launch_softmax_xent(float* logits, float* rlogits, const int32_t* y, int64_t y_stride,
                         int rows_per_model, int models, int classes, float scale, float* loss,
                         unsigned char* correct, cudaStream_t s) {
  const int64_t rows = int64_t(rows_per_model) * models;
  if (rows == 0) return;
  constexpr int kBlock = 128;  // one thread a row: a row is classes-long serial work
  softmax_xent_f32<<<linear_blocks(rows, kBlock), kBlock, 0, s>>>(
      logits, rlogits, y, y_stride, rows_per_model, rows, classes, scale, loss, correct);
  CUDA_CHECK_LAUNCH();
}

void cuda_softmax_xent(std::vector<float>& logits, const std::vector<int32_t>& labels, int classes,
                       float scale, std::vector<float>& loss, std::vector<unsigned char>& correct) {
  const int64_t rows = int64_t(labels.size());
  if (int64_t(logits.size()) != rows * classes)
    throw runtime_error("cuda_softmax_xent: logits must be rows x classes");
  DeviceArray<float> d_logits(logits), d_loss(static_cast<size_t>(rows));
  DeviceArray<int32_t> d_labels(labels);
  DeviceArray<unsigned char> d_correct(static_cast<size_t>(rows));
  d_loss.poison();  // an unwritten loss reads NaN
  launch_softmax_xent(d_logits.get(), nullptr, d_labels.get(), 0, int(rows), 1, classes, scale,
                      d_loss.get(), d_correct.get(), nullptr);
  logits = d_logits.fetch();
  loss = d_loss.fetch();
  correct = d_correct.fetch();
}

}  // namespace gossamer
