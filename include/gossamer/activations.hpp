// Activations, their derivatives, and softmax cross-entropy of one row: the per-element
// math of the MLP, compiled by both the CPU backend and the CUDA kernels.
#pragma once
#include <cmath>

#include "gossamer/hostdevice.hpp"

namespace gossamer {

// On the host, the float overloads of std:: (unqualified calls below would otherwise
// promote a float to double); in device code, CUDA's own float overloads.
#if !defined(__CUDA_ARCH__)
using std::erf;
using std::exp;
using std::log;
using std::tanh;
#endif

enum class Activation { Relu, Tanh, Gelu };

// GELU, exact form: x * Phi(x) (Hendrycks & Gimpel 2016); d/dx = Phi(x) + x * phi(x).
template <class T>
GOSSAMER_HD T activate(Activation a, T x) {
  switch (a) {
    case Activation::Relu:
      return x > T(0) ? x : T(0);
    case Activation::Tanh:
      return tanh(x);
    case Activation::Gelu:
      return T(0.5) * x * (T(1) + erf(x * T(0.70710678118654752440)));
  }
  return x;
}

// ReLU's and tanh's derivatives are functions of their output y = act(z) (y > 0 where z > 0;
// tanh' = 1 - y^2, tanh'' = -2 y (1 - y^2)), so a backward pass may read y instead of z
// (cuda_plan.hpp, CnnFusions::act_from_output); GELU's are not. The derivatives from z below
// compute tanh's through these very functions, so both give the same floats.
GOSSAMER_HD bool derivatives_from_output(Activation a) { return a != Activation::Gelu; }
template <class T>
GOSSAMER_HD T activate_derivative_of_output(Activation a, T y) {  // relu or tanh
  return a == Activation::Relu ? (y > T(0) ? T(1) : T(0)) : T(1) - y * y;
}
template <class T>
GOSSAMER_HD T activate_second_derivative_of_output(Activation a, T y) {  // relu or tanh
  return a == Activation::Relu ? T(0) : T(-2) * y * (T(1) - y * y);
}

// Derivative with respect to the pre-activation z.
template <class T>
GOSSAMER_HD T activate_derivative(Activation a, T z) {
  switch (a) {
    case Activation::Relu:
      return z > T(0) ? T(1) : T(0);
    case Activation::Tanh:
      return activate_derivative_of_output(a, T(tanh(z)));
    case Activation::Gelu: {
      const T cdf = T(0.5) * (T(1) + erf(z * T(0.70710678118654752440)));
      const T pdf = T(0.39894228040143267794) * exp(T(-0.5) * z * z);
      return cdf + z * pdf;
    }
  }
  return T(1);
}

// Second derivative with respect to z (for the R-operator's backward pass):
// relu 0 (almost everywhere); tanh -2 t (1 - t^2); gelu phi(z) (2 - z^2).
template <class T>
GOSSAMER_HD T activate_second_derivative(Activation a, T z) {
  switch (a) {
    case Activation::Relu:
      return T(0);
    case Activation::Tanh:
      return activate_second_derivative_of_output(a, T(tanh(z)));
    case Activation::Gelu:
      return T(0.39894228040143267794) * exp(T(-0.5) * z * z) * (T(2) - z * z);
  }
  return T(0);
}

// Softmax cross-entropy of one row of logits z[0..c) with label y:
// loss = logsumexp(z) - z_y; on return z holds softmax(z) - onehot(y), scaled by `scale`
// (1/B for the mean over a batch). Returns the loss; writes whether argmax == y.
template <class T>
GOSSAMER_HD T softmax_xent_row(T* z, int c, int y, T scale, bool* correct) {
  T zmax = z[0];
  int arg = 0;
  for (int i = 1; i < c; ++i)
    if (z[i] > zmax) {
      zmax = z[i];
      arg = i;
    }
  T sum = 0;
  for (int i = 0; i < c; ++i) sum += exp(z[i] - zmax);
  const T logsum = log(sum) + zmax;
  const T loss = logsum - z[y];
  for (int i = 0; i < c; ++i) z[i] = (exp(z[i] - logsum) - (i == y ? T(1) : T(0))) * scale;
  if (correct) *correct = (arg == y);
  return loss;
}

}  // namespace gossamer
