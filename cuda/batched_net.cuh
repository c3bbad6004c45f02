// The batched network of many models at once, behind one interface (docs/ARCHITECTURE.md,
// "local gradient" and "curvature" rows): the MLP (mlp.cuh) or the CNN (cnn.cuh), every layer
// over all models in one launch. The same object runs the training step (models = workers, each
// on its own minibatch), evaluation (models = workers or w-bar, all on one chunk of a data set)
// and curvature (models = (point, direction) pairs on one chunk of the curvature subset, with
// the R-operator pass). The backend never asks which kind it holds.
#pragma once
#include <memory>

#include "device_array.cuh"
#include "gemm.cuh"
#include "gossamer/cuda_plan.hpp"
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

class BatchedNet {
 public:
  virtual ~BatchedNet() = default;
  // Room for capacity() (model, row) pairs at once.
  int64_t capacity() const { return m_capacity; }
  // Every float buffer NaN (0xFF bytes): for the agreement tests' unwritten-element check.
  virtual void poison(cudaStream_t s) = 0;

  // Forward (and, when models.v is set, R-forward) pass; logits() holds the output layer.
  virtual void forward(const ModelBatch& models, const RowBatch& rows, const Gemm& gemm,
                       cudaStream_t s) = 0;
  // Softmax cross-entropy of the logits: per (model, row) loss and correctness; the logits
  // are replaced by dL/dz * scale (and their R-forward by R{dL/dz} * scale).
  virtual void loss(const ModelBatch& models, const RowBatch& rows, float scale,
                    cudaStream_t s) = 0;
  // Backward pass from loss(): out + k * out_stride = beta out + dL/dw of model k (the
  // gradient), or, when models.v is set, R{dL/dw} = H v. Every parameter is written once. One
  // backward pass a forward pass: it may consume what the forward pass kept (the CNN's columns).
  virtual void backward(const ModelBatch& models, const RowBatch& rows, float* out,
                        int64_t out_stride, float beta, const Gemm& gemm, cudaStream_t s) = 0;

  // [models][rows][classes]
  virtual const float* logits() const = 0;
  const float* row_loss() const { return m_row_loss.get(); }
  const unsigned char* row_correct() const { return m_row_correct.get(); }

 protected:
  BatchedNet(int64_t capacity, bool with_r);
  // Throws when models x rows exceed the capacity or an R pass meets buffers without one.
  void check_fits(const ModelBatch& models, const RowBatch& rows) const;
  void poison_outputs(cudaStream_t s);

  int64_t m_capacity;
  bool m_with_r;
  DeviceArray<float> m_row_loss;
  DeviceArray<unsigned char> m_row_correct;
};

// Every byte 0xFF (a NaN in every float): the poisoning of the agreement tests.
inline void poison_floats(DeviceArray<float>& a, cudaStream_t s) {
  if (a.size() > 0) CUDA_CHECK(cudaMemsetAsync(a.get(), 0xFF, a.size() * sizeof(float), s));
}

// The model's kind: BatchedMlp or BatchedCnn, with the buffers core/cuda_plan.cpp
// (net_workspace_bytes) plans for `capacity` pairs; cnn_paths: CudaOptions::cnn_paths.
std::unique_ptr<BatchedNet> make_batched_net(const ModelSpec& model, int64_t capacity, bool with_r,
                                             const CnnPaths& cnn_paths = {});

}  // namespace gossamer
