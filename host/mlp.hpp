// The MLP's forward and backward pass for one worker on one batch, with Eigen GEMMs:
//   Z_l = A_{l-1} W_l^T + 1 b_l^T,  A_l = act(Z_l)  (A_0 = X; the last Z is the logits)
//   loss = mean_i [logsumexp(z_i) - z_{i,y_i}]
//   dZ_L = (softmax(Z_L) - Y) / B;  dW_l = dZ_l^T A_{l-1};  db_l = 1^T dZ_l;
//   dZ_{l-1} = (dZ_l W_l) .* act'(Z_{l-1})
#pragma once
#include <Eigen/Dense>
#include <cstdint>
#include <vector>

#include "gossamer/model.hpp"

namespace gossamer {

template <class T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using ConstRowMap = Eigen::Map<const RowMat<T>>;

template <class T>
struct MlpWorkspace {
  std::vector<RowMat<T>> z, a;  // per layer: pre-activations, activations
  RowMat<T> dz, da;
};

struct BatchResult {
  double loss_sum = 0;  // sum over the batch of per-sample losses
  int64_t correct = 0;
};

// Loss (and accuracy) of the model with parameters w on the rows of x.
template <class T>
BatchResult mlp_loss(const ModelSpec& model, const T* w, const ConstRowMap<T>& x, const int32_t* y,
                     MlpWorkspace<T>& ws);

// Same, and the gradient of the mean loss over the batch into g (model.dim entries).
template <class T>
BatchResult mlp_loss_grad(const ModelSpec& model, const T* w, const ConstRowMap<T>& x, const int32_t* y, T* g,
                          MlpWorkspace<T>& ws);

}  // namespace gossamer
