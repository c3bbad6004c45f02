// A convolutional model's forward, backward and R-operator passes for one worker on one batch
// (model.kind "cnn"; the nodes of ModelSpec::cnn), with Eigen GEMMs: a convolution is
// Y = W col(X) + b over the im2col columns of its input (a linear layer is the convolution
// that covers the whole input), activations element-wise, 2 x 2 pools, global average pooling
// and residual additions (through a 1 x 1 convolution where the shape changes). Activations are
// stored [channels][sample][row][column]. The loss is the MLP's softmax cross-entropy.
//
// The Hessian-vector product is exact, by the R-operator (Pearlmutter 1994) pushed through every
// node: for a convolution (bilinear in W and X)
//   R{Y} = V col(X) + W col(R{X}) + v_b,
//   R{dW} = R{dY} col(X)^T + dY col(R{X})^T,   R{dX} = col^T(W^T R{dY} + V^T dY);
// an activation: R{A} = f'(Z) R{Z}, R{dZ} = f'(Z) R{dA} + f''(Z) R{Z} dA; the pools and the
// additions are linear (a max pool in the argmax it took), so R passes through them as the
// gradient does. GroupNorm (per sample and group of channels, x^ = (x - mu) / sigma,
// y = (1 + g) x^ + b; means over the group's elements):
//   R{sigma} = mean(x^ R{x}),  R{x^} = (R{x} - mean(R{x}) - x^ R{sigma}) / sigma,
//   dx = (dx^ - mean(dx^) - x^ mean(dx^ x^)) / sigma with dx^ = (1 + g) dy, and R{dx} its
//   derivative: -R{sigma}/sigma dx + (R{dx^} - mean(R{dx^}) - R{x^} mean(dx^ x^)
//   - x^ mean(R{dx^} x^ + dx^ R{x^})) / sigma.
#pragma once
#include <vector>

#include "mlp.hpp"

namespace gossamer {

template <class T>
struct CnnWorkspace {
  std::vector<RowMat<T>> y, ry, dy, rdy;  // per node: output, its R, and their gradients
  std::vector<RowMat<T>> col, rcol;       // per node with a convolution: its input's columns
  std::vector<std::vector<int64_t>> arg;  // per max pool: the input element of each output
  std::vector<std::vector<T>> stats;      // per GroupNorm: sigma, then R{sigma}, per (sample, group)
  RowMat<T> image, logits, dcol, rdcol;
  RowMat<T> act_scratch;  // an activation's derivative in the backward pass
};

// The logits (batch x classes) of the model with parameters w on the rows of x.
template <class T>
const RowMat<T>& cnn_logits(const ModelSpec& model, const T* w, const ConstRowMap<T>& x,
                            CnnWorkspace<T>& ws);

template <class T>
BatchResult cnn_loss(const ModelSpec& model, const T* w, const ConstRowMap<T>& x,
                     const int32_t* y, CnnWorkspace<T>& ws);

// Same, and the gradient of the mean loss over the batch into g (model.dim entries).
template <class T>
BatchResult cnn_loss_grad(const ModelSpec& model, const T* w, const ConstRowMap<T>& x,
                          const int32_t* y, T* g, CnnWorkspace<T>& ws);

// H(w) v of the mean loss over the batch into hv; returns the loss as cnn_loss does.
template <class T>
BatchResult cnn_hvp(const ModelSpec& model, const T* w, const T* v, const ConstRowMap<T>& x,
                    const int32_t* y, T* hv, CnnWorkspace<T>& ws);

}  // namespace gossamer
