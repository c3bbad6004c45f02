// The MLP's forward and backward pass for one worker on one batch, with Eigen GEMMs:
//   Z_l = A_{l-1} W_l^T + 1 b_l^T,  A_l = act(Z_l)  (A_0 = X; the last Z is the logits)
//   loss = mean_i [logsumexp(z_i) - z_{i,y_i}]
//   dZ_L = (softmax(Z_L) - Y) / B;  dW_l = dZ_l^T A_{l-1};  db_l = 1^T dZ_l;
//   dZ_{l-1} = (dZ_l W_l) .* act'(Z_{l-1})
#pragma once
#include <Eigen/Dense>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "gossamer/model.hpp"

namespace gossamer {

template <class T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using ConstRowMap = Eigen::Map<const RowMat<T>>;

// Which function of the activation (activations.hpp) an element-wise pass applies.
enum class ActOf { Value, Derivative, SecondDerivative };

// out = f(x) element by element, f the activation's value or first or second derivative. The
// activation is dispatched once, outside the loop: a lambda switching on it per element kept
// ReLU's loops scalar (with the max pool, 30 % of a CNN step's time on the 2-core VM). The
// same functions, so the same floats.
template <ActOf F, class Derived, class Out>
void apply_activation(Activation a, const Eigen::MatrixBase<Derived>& x, Out& out) {
  using T = typename Derived::Scalar;
  const auto pass = [&](auto fixed) {
    constexpr Activation A = decltype(fixed)::value;
    out = x.unaryExpr([](T v) {
      if constexpr (F == ActOf::Value) return activate(A, v);
      if constexpr (F == ActOf::Derivative) return activate_derivative(A, v);
      if constexpr (F == ActOf::SecondDerivative) return activate_second_derivative(A, v);
    });
  };
  switch (a) {
    case Activation::Relu:
      return pass(std::integral_constant<Activation, Activation::Relu>{});
    case Activation::Tanh:
      return pass(std::integral_constant<Activation, Activation::Tanh>{});
    case Activation::Gelu:
      return pass(std::integral_constant<Activation, Activation::Gelu>{});
  }
}

template <class T>
struct MlpWorkspace {
  std::vector<RowMat<T>> z, a;  // per layer: pre-activations, activations
  RowMat<T> dz, da;
};

struct BatchResult {
  double loss_sum = 0;  // sum over the batch of per-sample losses
  int64_t correct = 0;
};

// The logits of the model with parameters w on the rows of x (in ws.z.back()).
template <class T>
const RowMat<T>& mlp_logits(const ModelSpec& model, const T* w, const ConstRowMap<T>& x,
                            MlpWorkspace<T>& ws);

// Loss (and accuracy) of the model with parameters w on the rows of x.
template <class T>
BatchResult mlp_loss(const ModelSpec& model, const T* w, const ConstRowMap<T>& x, const int32_t* y,
                     MlpWorkspace<T>& ws);

// Same, and the gradient of the mean loss over the batch into g (model.dim entries).
template <class T>
BatchResult mlp_loss_grad(const ModelSpec& model, const T* w, const ConstRowMap<T>& x,
                          const int32_t* y, T* g, MlpWorkspace<T>& ws);

}  // namespace gossamer

namespace gossamer {

// Exact Hessian-vector product of the mean loss over the batch, H(w) v, into hv, by the
// R-operator (Pearlmutter 1994): R{f} = d/dr f(w + r v) at r = 0, pushed through
//   forward:    R{Z_l} = R{A_{l-1}} W_l^T + A_{l-1} V_l^T + 1 Rb_l^T,  R{A_l} = act'(Z_l) .* R{Z_l}
//   softmax-CE: R{dZ_L} = (P .* (R{Z_L} - rowsum(P .* R{Z_L}))) / B
//   backward:   R{dW_l} = R{dZ_l}^T A_{l-1} + dZ_l^T R{A_{l-1}},  R{db_l} = 1^T R{dZ_l}
//               R{dA_{l-1}} = R{dZ_l} W_l + dZ_l V_l
//               R{dZ_{l-1}} = R{dA_{l-1}} .* act'(Z_{l-1}) + dA_{l-1} .* act''(Z_{l-1}) .*
//               R{Z_{l-1}}
// Returns the loss of the batch as mlp_loss does.
template <class T>
struct HvpWorkspace {
  MlpWorkspace<T> base;
  std::vector<RowMat<T>> rz, ra;
  RowMat<T> rdz, rda, da, dz_prev, rdz_prev;
  RowMat<T> d1z, d2z;  // act'(Z) and act''(Z) of the layer below, in the backward pass
};

template <class T>
BatchResult mlp_hvp(const ModelSpec& model, const T* w, const T* v, const ConstRowMap<T>& x,
                    const int32_t* y, T* hv, HvpWorkspace<T>& ws);

}  // namespace gossamer
