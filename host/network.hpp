// One worker's passes for either kind of model (model.kind): the MLP's (mlp.hpp) or the CNN's
// (cnn.hpp), behind one set of calls, so the CPU backend and the tests need not know which.
#pragma once
#include "cnn.hpp"
#include "mlp.hpp"

namespace gossamer {

template <class T>
struct NetWorkspace {
  HvpWorkspace<T> mlp;  // its .base serves the loss and the gradient
  CnnWorkspace<T> cnn;
};

template <class T>
const RowMat<T>& net_logits(const ModelSpec& m, const T* w, const ConstRowMap<T>& x,
                            NetWorkspace<T>& ws) {
  return m.kind == ModelKind::Cnn ? cnn_logits(m, w, x, ws.cnn) : mlp_logits(m, w, x, ws.mlp.base);
}

template <class T>
BatchResult net_loss(const ModelSpec& m, const T* w, const ConstRowMap<T>& x, const int32_t* y,
                     NetWorkspace<T>& ws) {
  return m.kind == ModelKind::Cnn ? cnn_loss(m, w, x, y, ws.cnn) : mlp_loss(m, w, x, y, ws.mlp.base);
}

template <class T>
BatchResult net_loss_grad(const ModelSpec& m, const T* w, const ConstRowMap<T>& x,
                          const int32_t* y, T* g, NetWorkspace<T>& ws) {
  return m.kind == ModelKind::Cnn ? cnn_loss_grad(m, w, x, y, g, ws.cnn)
                                  : mlp_loss_grad(m, w, x, y, g, ws.mlp.base);
}

template <class T>
BatchResult net_hvp(const ModelSpec& m, const T* w, const T* v, const ConstRowMap<T>& x,
                    const int32_t* y, T* hv, NetWorkspace<T>& ws) {
  return m.kind == ModelKind::Cnn ? cnn_hvp(m, w, v, x, y, hv, ws.cnn)
                                  : mlp_hvp(m, w, v, x, y, hv, ws.mlp);
}

}  // namespace gossamer
