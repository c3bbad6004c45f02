// The R-operator pass of mlp.hpp's mlp_hvp. Shares the layout and the per-element math
// (activations.hpp) with the gradient; no finite differences.
#include "mlp.hpp"

namespace gossamer {
namespace {
template <class T>
using Vec = Eigen::Matrix<T, Eigen::Dynamic, 1>;
}  // namespace

template <class T>
BatchResult mlp_hvp(const ModelSpec& model, const T* w, const T* v, const ConstRowMap<T>& x,
                    const int32_t* y, T* hv, HvpWorkspace<T>& ws) {
  const int layers = int(model.layers.size());
  const Activation act = model.activation;
  auto weight = [&](const T* p, int l) {
    return ConstRowMap<T>(p + model.layers[l].w_offset, model.layers[l].out, model.layers[l].in);
  };
  auto bias = [&](const T* p, int l) {
    return Eigen::Map<const Vec<T>>(p + model.layers[l].b_offset, model.layers[l].out);
  };

  // Forward and R-forward.
  auto& z = ws.base.z;
  auto& a = ws.base.a;
  z.resize(layers), a.resize(layers), ws.rz.resize(layers), ws.ra.resize(layers);
  for (int l = 0; l < layers; ++l) {
    if (l == 0) {
      z[0].noalias() = x * weight(w, 0).transpose();
      ws.rz[0].noalias() = x * weight(v, 0).transpose();
    } else {
      z[l].noalias() = a[l - 1] * weight(w, l).transpose();
      ws.rz[l].noalias() = ws.ra[l - 1] * weight(w, l).transpose();
      ws.rz[l].noalias() += a[l - 1] * weight(v, l).transpose();
    }
    z[l].rowwise() += bias(w, l).transpose();
    ws.rz[l].rowwise() += bias(v, l).transpose();
    if (l + 1 < layers) {
      apply_activation<ActOf::Value>(act, z[l], a[l]);
      apply_activation<ActOf::Derivative>(act, z[l], ws.ra[l]);
      ws.ra[l].array() *= ws.rz[l].array();
    }
  }

  // Softmax cross-entropy: dZ = (P - Y)/B, R{dZ} = P .* (RZ - rowsum(P .* RZ)) / B.
  const T inv_b = T(1) / T(x.rows());
  RowMat<T>& dz = ws.base.dz;
  dz = z.back();
  BatchResult r;
  for (Eigen::Index i = 0; i < dz.rows(); ++i) {
    bool correct = false;
    r.loss_sum += double(softmax_xent_row(dz.row(i).data(), int(dz.cols()), y[i], inv_b, &correct));
    r.correct += correct;
  }
  RowMat<T> p = dz * T(x.rows());  // softmax - onehot
  for (Eigen::Index i = 0; i < p.rows(); ++i) p(i, y[i]) += T(1);
  const Vec<T> dot = p.cwiseProduct(ws.rz.back()).rowwise().sum();
  ws.rdz = (p.cwiseProduct(ws.rz.back().colwise() - dot)) * inv_b;

  // Backward and R-backward.
  for (int l = layers - 1; l >= 0; --l) {
    const auto& s = model.layers[l];
    Eigen::Map<RowMat<T>> hw(hv + s.w_offset, s.out, s.in);
    if (l == 0) {
      hw.noalias() = ws.rdz.transpose() * x;  // R{A_0} = 0
    } else {
      hw.noalias() = ws.rdz.transpose() * a[l - 1];
      hw.noalias() += dz.transpose() * ws.ra[l - 1];
    }
    Eigen::Map<Vec<T>>(hv + s.b_offset, s.out) = ws.rdz.colwise().sum().transpose();
    if (l > 0) {
      ws.da.noalias() = dz * weight(w, l);
      ws.rda.noalias() = ws.rdz * weight(w, l);
      ws.rda.noalias() += dz * weight(v, l);
      apply_activation<ActOf::Derivative>(act, z[l - 1], ws.d1z);
      apply_activation<ActOf::SecondDerivative>(act, z[l - 1], ws.d2z);
      ws.dz_prev = ws.da.cwiseProduct(ws.d1z);
      ws.rdz_prev =
          ws.rda.cwiseProduct(ws.d1z) + ws.da.cwiseProduct(ws.d2z).cwiseProduct(ws.rz[l - 1]);
      dz.swap(ws.dz_prev);
      ws.rdz.swap(ws.rdz_prev);
    }
  }
  return r;
}

template BatchResult mlp_hvp<float>(const ModelSpec&, const float*, const float*,
                                    const ConstRowMap<float>&, const int32_t*, float*,
                                    HvpWorkspace<float>&);
template BatchResult mlp_hvp<double>(const ModelSpec&, const double*, const double*,
                                     const ConstRowMap<double>&, const int32_t*, double*,
                                     HvpWorkspace<double>&);

}  // namespace gossamer
