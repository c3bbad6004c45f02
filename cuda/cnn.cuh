// The CNN of many models at once (batched_net.cuh; model.kind "cnn", the nodes of
// ModelSpec::cnn), with the algebra of host/cnn.cpp: a convolution is one strided-batched GEMM
// over all models, Y_k = W_k col(X_k) + b_k, on the im2col columns of model k's input (a linear
// layer is the convolution that covers its whole input); activations, pools, residual additions
// and GroupNorm are kernels over all models (cnn_kernels.cu). The R-operator runs through every
// node, so the Hessian-vector products are exact.
#pragma once
#include <utility>
#include <vector>

#include "batched_net.cuh"
#include "gossamer/conv_index.hpp"
#include "gossamer/cuda_plan.hpp"

namespace gossamer {

class BatchedCnn : public BatchedNet {
 public:
  // The buffers of core/cuda_plan.cpp's cnn_pair_sizes for `capacity` (model, row) pairs; paths:
  // CudaOptions::cnn_paths (CnnPaths::general(): the general path only).
  BatchedCnn(const ModelSpec& model, int64_t capacity, bool with_r, const CnnPaths& paths = {});
  void poison(cudaStream_t s) override;
  void forward(const ModelBatch& models, const RowBatch& rows, const Gemm& gemm,
               cudaStream_t s) override;
  void loss(const ModelBatch& models, const RowBatch& rows, float scale, cudaStream_t s) override;
  void backward(const ModelBatch& models, const RowBatch& rows, float* out, int64_t out_stride,
                float beta, const Gemm& gemm, cudaStream_t s) override;
  const float* logits() const override { return m_logits.get(); }

 private:
  // Node i's value; null where the fused paths never write it (cnn_pair_sizes).
  float* value(int i) const { return m_y[size_t(i)].empty() ? nullptr : m_y[size_t(i)].get(); }
  const float* in(int j) const { return j < 0 ? m_image.get() : value(j); }
  // Whether the backward pass adds to node j's gradient (else its one reader stores it whole).
  bool accumulates(int j) const { return !m_stored[size_t(j)]; }
  // Whether a convolution runs without im2col (few columns, small_convs on).
  bool small(const ConvShape& c) const { return m_paths.small_convs && few_columns(c); }
  // R{input j}: null for the image (its R is 0) or without the R-operator.
  const float* r_in(int j, bool r) const { return j < 0 || !r ? nullptr : m_ry[size_t(j)].get(); }
  // Input j's image height and width (j < 0: the image).
  std::pair<int, int> in_hw(int j) const {
    return j < 0 ? std::pair{m_model.image_h, m_model.image_w}
                 : std::pair{m_model.nodes[size_t(j)].h, m_model.nodes[size_t(j)].w};
  }
  void forward_node(int i, const ModelBatch& mb, int rows, const Gemm& gemm, cudaStream_t s);
  void backward_node(int i, const ModelBatch& mb, int rows, float* out, int64_t out_stride,
                     float beta, const Gemm& gemm, cudaStream_t s);
  // Node i's convolution c of input j; act >= 0: the activation node whose forward the
  // convolution's kernel computes too.
  void conv_forward(int i, const ConvShape& c, int j, float* y, float* ry, int act,
                    const ModelBatch& mb, int rows, const Gemm& gemm, cudaStream_t s);
  void conv_backward(int i, const ConvShape& c, int j, const float* dy, const float* rdy,
                     const ModelBatch& mb, int rows, float* out, int64_t out_stride, float beta,
                     const Gemm& gemm, cudaStream_t s);
  // Node i's im2col columns and their R twin (cnn_pair_sizes's col_at).
  float* col(int i) const { return m_col.get() + capacity() * m_col_at[size_t(i)]; }
  float* rcol(int i) const { return m_rcol.get() + capacity() * m_col_at[size_t(i)]; }

  ModelSpec m_model;
  CnnPaths m_paths;            // CudaOptions::cnn_paths
  std::vector<bool> m_stored;  // cnn_gradient_stored(m_model), or none without stored_grads
  CnnFusions m_fused;          // cnn_fusions(m_model, m_paths)
  // Per node: output, gradient and their R twins; a GroupNorm's x^ (R{x^}) and sigma, R{sigma};
  // a max pool's chosen inputs.
  std::vector<DeviceArray<float>> m_y, m_dy, m_ry, m_rdy, m_xh, m_rxh, m_stats;
  std::vector<DeviceArray<int32_t>> m_arg;
  DeviceArray<float> m_image, m_col, m_rcol, m_logits, m_rlogits;
  std::vector<int64_t> m_col_at;   // cnn_pair_sizes's col_at
  DeviceArray<double> m_partials;  // the small weight gradients' partial sums
};

}  // namespace gossamer
