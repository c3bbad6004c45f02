// The MLP of many models at once (docs/ARCHITECTURE.md, "local gradient" and "curvature" rows): every
// layer is one strided-batched GEMM over all models, the element-wise parts are fused
// kernels (mlp_kernels.cu), the loss is the one-pass softmax cross-entropy. The same object
// runs the training step (models = workers, each on its own minibatch), evaluation (models =
// workers or w-bar, all on one chunk of a data set) and curvature (models = (point,
// direction) pairs on one chunk of the curvature subset, with the R-operator pass).
#pragma once
#include <vector>

#include "device_array.cuh"
#include "gemm.cuh"
#include "gossamer/model.hpp"

namespace gossamer {

// The parameters of `count` models: model k's flat vector at w + k * w_stride (stride 0:
// one shared point). v: the directions of the R-operator pass (null without it).
struct ModelBatch {
  const float* w = nullptr;
  int64_t w_stride = 0;
  const float* v = nullptr;
  int64_t v_stride = 0;
  int count = 0;
};

// The data rows each model sees: `count` rows of model k at x + k * x_stride (stride 0: the
// same rows for every model), labels at y + k * y_stride.
struct RowBatch {
  const float* x = nullptr;
  int64_t x_stride = 0;
  const int32_t* y = nullptr;
  int64_t y_stride = 0;
  int count = 0;
};

class BatchedMlp {
 public:
  // Room for `capacity` (model, row) pairs at once; with_r: the R-operator buffers too.
  BatchedMlp(const ModelSpec& model, int64_t capacity, bool with_r);
  int64_t capacity() const { return m_capacity; }
  // Every float buffer NaN (0xFF bytes): for the agreement tests' unwritten-element check.
  void poison(cudaStream_t s);

  // Forward (and, when models.v is set, R-forward) pass; logits() holds the output layer.
  void forward(const ModelBatch& models, const RowBatch& rows, const Gemm& gemm, cudaStream_t s);
  // Softmax cross-entropy of the logits: per (model, row) loss and correctness; the logits
  // are replaced by dL/dz * scale (and their R-forward by R{dL/dz} * scale).
  void loss(const ModelBatch& models, const RowBatch& rows, float scale, cudaStream_t s);
  // Backward pass from loss(): out + k * out_stride = beta out + dL/dw of model k (the
  // gradient), or, when models.v is set, R{dL/dw} = H v.
  void backward(const ModelBatch& models, const RowBatch& rows, float* out, int64_t out_stride,
                float beta, const Gemm& gemm, cudaStream_t s);

  const float* logits() const { return m_z.back().get(); }
  const float* row_loss() const { return m_row_loss.get(); }
  const unsigned char* row_correct() const { return m_row_correct.get(); }

 private:
  void check_fits(const ModelBatch& models, const RowBatch& rows) const;

  ModelSpec m_model;
  int64_t m_capacity;
  bool m_with_r;
  // Per layer l: pre-activations z and activations a (hidden layers only), and their R twins.
  std::vector<DeviceArray<float>> m_z, m_a, m_rz, m_ra;
  // Backward scratch of the widest layer: dL/dz, dL/da, and their R twins.
  DeviceArray<float> m_dz, m_rdz, m_da, m_rda;
  DeviceArray<float> m_row_loss;
  DeviceArray<unsigned char> m_row_correct;
};

}  // namespace gossamer
