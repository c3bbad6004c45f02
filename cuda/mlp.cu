// Forward, backward and the R-operator (exact Hessian-vector products) of the batched MLP,
// with the algebra of host/mlp.cpp and host/hvp.cpp, row-major, for all models at once:
//   forward   Z_l = A_{l-1} W_l^T + b_l,  A_l = act(Z_l)                     (A_{-1} = X)
//   R-forward RZ_l = RA_{l-1} W_l^T + A_{l-1} V_l^T + bv_l,  RA_l = act'(Z_l) RZ_l  (RA_{-1} = 0)
//   backward  dW_l = dZ_l^T A_{l-1},  db_l = colsum dZ_l,  dZ_{l-1} = (dZ_l W_l) .* act'(Z_{l-1})
//   R-backward RdW_l = RdZ_l^T A_{l-1} + dZ_l^T RA_{l-1},  Rdb_l = colsum RdZ_l,
//             RdZ_{l-1} = (RdZ_l W_l + dZ_l V_l) .* act'(Z_{l-1}) + (dZ_l W_l) .* act''(Z_{l-1}) .*
//             RZ_{l-1}
#include <algorithm>
#include <string>

#include "kernels.cuh"
#include "mlp.cuh"

namespace gossamer {
namespace {

int max_hidden(const ModelSpec& model) {
  int w = 0;
  for (int h : model.hidden) w = std::max(w, h);
  return w;
}

}  // namespace

// The sizes here are the ones core/cuda_plan.cpp (mlp_workspace_bytes) plans for.
BatchedMlp::BatchedMlp(const ModelSpec& model, int64_t capacity, bool with_r)
    : BatchedNet(capacity, with_r), m_model(model) {
  const int layers = int(model.layers.size());
  for (int l = 0; l < layers; ++l) {
    const size_t n = size_t(capacity) * model.layers[l].out;
    const bool hidden = l + 1 < layers;
    m_z.emplace_back(n);
    m_a.emplace_back(hidden ? n : 0);
    m_rz.emplace_back(with_r ? n : 0);
    m_ra.emplace_back(with_r && hidden ? n : 0);
  }
  const size_t scratch = size_t(capacity) * max_hidden(model);
  m_dz = DeviceArray<float>(scratch);
  m_da = DeviceArray<float>(scratch);
  if (with_r) {
    m_rdz = DeviceArray<float>(scratch);
    m_rda = DeviceArray<float>(scratch);
  }
}

void BatchedMlp::poison(cudaStream_t s) {
  for (auto* group : {&m_z, &m_a, &m_rz, &m_ra})
    for (auto& a : *group) poison_floats(a, s);
  for (auto* a : {&m_dz, &m_rdz, &m_da, &m_rda}) poison_floats(*a, s);
  poison_outputs(s);
}

void BatchedMlp::forward(const ModelBatch& mb, const RowBatch& rb, const Gemm& gemm,
                         cudaStream_t s) {
  check_fits(mb, rb);
  const int layers = int(m_model.layers.size()), R = rb.count, K = mb.count;
  const bool r_pass = mb.v != nullptr;
  for (int l = 0; l < layers; ++l) {
    const LayerSpec& L = m_model.layers[l];
    const int64_t in_stride = int64_t(R) * L.in, out_stride = int64_t(R) * L.out;
    const MatrixArg input = l == 0 ? MatrixArg{rb.x, L.in, rb.x_stride, false}
                                   : MatrixArg{m_a[l - 1].get(), L.in, in_stride, false};
    const MatrixArg weight_t{mb.w + L.w_offset, L.in, mb.w_stride, true};  // W_l^T
    gemm.run(R, L.out, L.in, input, weight_t, 0.f, m_z[l].get(), L.out, out_stride, K);
    if (r_pass) {
      const MatrixArg dir_t{mb.v + L.w_offset, L.in, mb.v_stride, true};  // V_l^T
      if (l == 0) {
        gemm.run(R, L.out, L.in, input, dir_t, 0.f, m_rz[l].get(), L.out, out_stride, K);
      } else {
        const MatrixArg r_input{m_ra[l - 1].get(), L.in, in_stride, false};
        gemm.run(R, L.out, L.in, r_input, weight_t, 0.f, m_rz[l].get(), L.out, out_stride, K);
        gemm.run(R, L.out, L.in, input, dir_t, 1.f, m_rz[l].get(), L.out, out_stride, K);
      }
    }
    const bool hidden = l + 1 < layers;
    launch_bias_act(m_z[l].get(), hidden ? m_a[l].get() : nullptr, r_pass ? m_rz[l].get() : nullptr,
                    r_pass && hidden ? m_ra[l].get() : nullptr, mb.w, mb.w_stride, mb.v,
                    mb.v_stride, L.b_offset, R, L.out, K, m_model.activation, s);
  }
}

void BatchedMlp::loss(const ModelBatch& mb, const RowBatch& rb, float scale, cudaStream_t s) {
  check_fits(mb, rb);
  launch_softmax_xent(m_z.back().get(), mb.v ? m_rz.back().get() : nullptr, rb.y, rb.y_stride,
                      rb.count, mb.count, m_model.classes, scale, m_row_loss.get(),
                      m_row_correct.get(), s);
}

void BatchedMlp::backward(const ModelBatch& mb, const RowBatch& rb, float* out, int64_t out_stride,
                          float beta, const Gemm& gemm, cudaStream_t s) {
  check_fits(mb, rb);
  const int layers = int(m_model.layers.size()), R = rb.count, K = mb.count;
  const bool r_pass = mb.v != nullptr;
  // dL/dz of the output layer (and its R twin) were left in place of the logits by loss().
  float* dz = m_z.back().get();
  float* rdz = r_pass ? m_rz.back().get() : nullptr;
  for (int l = layers - 1; l >= 0; --l) {
    const LayerSpec& L = m_model.layers[l];
    const int64_t in_stride = int64_t(R) * L.in, out_stride_z = int64_t(R) * L.out;
    const MatrixArg input = l == 0 ? MatrixArg{rb.x, L.in, rb.x_stride, false}
                                   : MatrixArg{m_a[l - 1].get(), L.in, in_stride, false};
    const MatrixArg dz_t{dz, L.out, out_stride_z, true};
    float* dw = out + L.w_offset;
    if (!r_pass) {
      gemm.run(L.out, L.in, R, dz_t, input, beta, dw, L.in, out_stride, K);
      launch_column_sums(dz, R, L.out, K, out + L.b_offset, out_stride, beta, s);
    } else {
      gemm.run(L.out, L.in, R, MatrixArg{rdz, L.out, out_stride_z, true}, input, beta, dw, L.in,
               out_stride, K);
      if (l > 0)
        gemm.run(L.out, L.in, R, dz_t, MatrixArg{m_ra[l - 1].get(), L.in, in_stride, false}, 1.f,
                 dw, L.in, out_stride, K);
      launch_column_sums(rdz, R, L.out, K, out + L.b_offset, out_stride, beta, s);
    }
    if (l == 0) break;
    // dA = dZ W_l (R: RdA = RdZ W_l + dZ V_l), then through the activation of layer l-1.
    // The new dz may overwrite the buffer the current one lives in: the GEMMs above and
    // below have read it by then (one stream).
    const MatrixArg dz_n{dz, L.out, out_stride_z, false};
    const MatrixArg weight{mb.w + L.w_offset, L.in, mb.w_stride, false};
    gemm.run(R, L.in, L.out, dz_n, weight, 0.f, m_da.get(), L.in, in_stride, K);
    if (r_pass) {
      gemm.run(R, L.in, L.out, MatrixArg{rdz, L.out, out_stride_z, false}, weight, 0.f, m_rda.get(),
               L.in, in_stride, K);
      gemm.run(R, L.in, L.out, dz_n, MatrixArg{mb.v + L.w_offset, L.in, mb.v_stride, false}, 1.f,
               m_rda.get(), L.in, in_stride, K);
    }
    launch_act_backward(m_da.get(), r_pass ? m_rda.get() : nullptr, m_z[l - 1].get(),
                        r_pass ? m_rz[l - 1].get() : nullptr, m_dz.get(),
                        r_pass ? m_rdz.get() : nullptr, int64_t(K) * R * L.in, m_model.activation,
                        s);
    dz = m_dz.get();
    rdz = r_pass ? m_rdz.get() : nullptr;
  }
}

}  // namespace gossamer
