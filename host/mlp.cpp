#include "mlp.hpp"

namespace gossamer {
namespace {

template <class T>
using Vec = Eigen::Matrix<T, Eigen::Dynamic, 1>;

template <class T>
ConstRowMap<T> layer_weight(const ModelSpec& model, const T* w, int l) {
  const auto& s = model.layers[l];
  return ConstRowMap<T>(w + s.w_offset, s.out, s.in);
}

template <class T>
void forward(const ModelSpec& model, const T* w, const ConstRowMap<T>& x, MlpWorkspace<T>& ws) {
  const int layers = int(model.layers.size());
  ws.z.resize(layers);
  ws.a.resize(layers);
  const Activation act = model.activation;
  for (int l = 0; l < layers; ++l) {
    const auto& s = model.layers[l];
    const Eigen::Map<const Vec<T>> bias(w + s.b_offset, s.out);
    if (l == 0)
      ws.z[0].noalias() = x * layer_weight(model, w, 0).transpose();
    else
      ws.z[l].noalias() = ws.a[l - 1] * layer_weight(model, w, l).transpose();
    ws.z[l].rowwise() += bias.transpose();
    if (l + 1 < layers) apply_activation<ActOf::Value>(act, ws.z[l], ws.a[l]);
  }
}

// Softmax cross-entropy over the logits, row by row; leaves dLoss/dlogits * scale in place.
template <class T>
BatchResult softmax_xent(RowMat<T>& logits, const int32_t* y, T scale) {
  BatchResult r;
  for (Eigen::Index i = 0; i < logits.rows(); ++i) {
    bool correct = false;
    r.loss_sum +=
        double(softmax_xent_row(logits.row(i).data(), int(logits.cols()), y[i], scale, &correct));
    r.correct += correct;
  }
  return r;
}

}  // namespace

template <class T>
const RowMat<T>& mlp_logits(const ModelSpec& model, const T* w, const ConstRowMap<T>& x,
                            MlpWorkspace<T>& ws) {
  forward(model, w, x, ws);
  return ws.z.back();
}

template <class T>
BatchResult mlp_loss(const ModelSpec& model, const T* w, const ConstRowMap<T>& x, const int32_t* y,
                     MlpWorkspace<T>& ws) {
  forward(model, w, x, ws);
  return softmax_xent(ws.z.back(), y, T(1));
}

template <class T>
BatchResult mlp_loss_grad(const ModelSpec& model, const T* w, const ConstRowMap<T>& x,
                          const int32_t* y, T* g, MlpWorkspace<T>& ws) {
  forward(model, w, x, ws);
  const int layers = int(model.layers.size());
  const BatchResult r = softmax_xent(ws.z.back(), y, T(1) / T(x.rows()));
  ws.dz.swap(ws.z.back());  // dZ_L, computed in place over the logits
  const Activation act = model.activation;
  for (int l = layers - 1; l >= 0; --l) {
    const auto& s = model.layers[l];
    Eigen::Map<RowMat<T>> grad_w(g + s.w_offset, s.out, s.in);
    if (l == 0)
      grad_w.noalias() = ws.dz.transpose() * x;
    else
      grad_w.noalias() = ws.dz.transpose() * ws.a[l - 1];
    Eigen::Map<Vec<T>>(g + s.b_offset, s.out) = ws.dz.colwise().sum().transpose();
    if (l > 0) {
      ws.da.noalias() = ws.dz * layer_weight(model, w, l);
      apply_activation<ActOf::Derivative>(act, ws.z[l - 1], ws.dz);
      ws.dz.array() *= ws.da.array();
    }
  }
  return r;
}

template const RowMat<float>& mlp_logits<float>(const ModelSpec&, const float*,
                                                const ConstRowMap<float>&, MlpWorkspace<float>&);
template const RowMat<double>& mlp_logits<double>(const ModelSpec&, const double*,
                                                  const ConstRowMap<double>&,
                                                  MlpWorkspace<double>&);
template BatchResult mlp_loss<float>(const ModelSpec&, const float*, const ConstRowMap<float>&,
                                     const int32_t*, MlpWorkspace<float>&);
template BatchResult mlp_loss<double>(const ModelSpec&, const double*, const ConstRowMap<double>&,
                                      const int32_t*, MlpWorkspace<double>&);
template BatchResult mlp_loss_grad<float>(const ModelSpec&, const float*, const ConstRowMap<float>&,
                                          const int32_t*, float*, MlpWorkspace<float>&);
template BatchResult mlp_loss_grad<double>(const ModelSpec&, const double*,
                                           const ConstRowMap<double>&, const int32_t*, double*,
                                           MlpWorkspace<double>&);

}  // namespace gossamer
