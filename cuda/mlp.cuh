// The MLP of many models at once (batched_net.cuh): every layer is one strided-batched GEMM
// over all models, the element-wise parts are fused kernels (mlp_kernels.cu), the loss is the
// one-pass softmax cross-entropy.
#pragma once
#include <vector>

#include "batched_net.cuh"

namespace gossamer {

class BatchedMlp : public BatchedNet {
 public:
  // Room for `capacity` (model, row) pairs at once; with_r: the R-operator buffers too.
  BatchedMlp(const ModelSpec& model, int64_t capacity, bool with_r);
  void poison(cudaStream_t s) override;
  void forward(const ModelBatch& models, const RowBatch& rows, const Gemm& gemm,
               cudaStream_t s) override;
  void loss(const ModelBatch& models, const RowBatch& rows, float scale, cudaStream_t s) override;
  void backward(const ModelBatch& models, const RowBatch& rows, float* out, int64_t out_stride,
                float beta, const Gemm& gemm, cudaStream_t s) override;
  const float* logits() const override { return m_z.back().get(); }

 private:
  ModelSpec m_model;
  // Per layer l: pre-activations z and activations a (hidden layers only), and their R twins.
  std::vector<DeviceArray<float>> m_z, m_a, m_rz, m_ra;
  // Backward scratch of the widest layer: dL/dz, dL/da, and their R twins.
  DeviceArray<float> m_dz, m_rdz, m_da, m_rda;
};

}  // namespace gossamer
