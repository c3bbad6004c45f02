// Softmax cross-entropy of a batch of logit rows, loss and gradient in one pass: one thread
// a row, through the same per-row function as the CPU (activations.hpp softmax_xent_row).
//   loss_i = logsumexp(z_i) - z_{i,y_i};  z_i <- (softmax(z_i) - onehot(y_i)) * scale
#include "device_array.cuh"
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
  DeviceArray<float> d_logits(logits), d_loss(static_cast<size_t>(rows));
  DeviceArray<int32_t> d_labels(labels);
  DeviceArray<unsigned char> d_correct(static_cast<size_t>(rows));
  d_loss.poison();  // an unwritten loss reads NaN
  constexpr int kBlock = 128;
  if (rows > 0) {
    softmax_xent_f32<<<unsigned(CEIL_DIV(rows, kBlock)), kBlock>>>(
        d_logits.get(), d_labels.get(), rows, classes, scale, d_loss.get(), d_correct.get());
    CUDA_CHECK_LAUNCH();
  }
  logits = d_logits.fetch();
  loss = d_loss.fetch();
  correct = d_correct.fetch();
}

}  // namespace gossamer
