// The index arithmetic of the batched CNN's column kernels (cuda/cnn_kernels.cu), for host and
// device: the CUDA kernels call these once an element, and tests/test_cnn.cpp checks them on the
// CPU against a direct im2col and its adjoint. Layouts (cuda/cnn.cu): activations
// [model][channel][row][h][w]; the columns of model k [k][(ch, i, j)][(row, oh, ow)].
#pragma once
#include <cstdint>

#include "gossamer/hostdevice.hpp"
#include "gossamer/model.hpp"

namespace gossamer {

// n / d and n % d for n < 2^31 by a multiply-high, an add and a shift (Granlund and Montgomery
// 1994, in the form of PyTorch's IntDivider): the divisor is fixed once on the host, where a
// 32-bit division by a variable costs a device about twenty instructions and a 64-bit one a
// long routine.
struct FastDiv {
  uint32_t d = 1, m = 1, s = 0;
  FastDiv() = default;
  // divisor in [1, 2^31].
  explicit FastDiv(uint32_t divisor) : d(divisor) {
    while ((uint64_t(1) << s) < d) ++s;
    m = uint32_t(((uint64_t(1) << 32) * ((uint64_t(1) << s) - d)) / d + 1);
  }
  GOSSAMER_HD uint32_t div(uint32_t n) const {
#if defined(__CUDA_ARCH__)
    const uint32_t t = __umulhi(n, m);
#else
    const uint32_t t = uint32_t((uint64_t(n) * m) >> 32);
#endif
    return (t + n) >> s;  // t <= n < 2^31: no overflow
  }
  GOSSAMER_HD uint32_t mod(uint32_t n) const { return n - div(n) * d; }
};

// One convolution's column geometry for a pass of `rows` rows a model.
struct ColumnGeometry {
  ConvShape s;
  FastDiv rows, cols, ohw, out_w, kk, kw, kc, ihw, in_w, cin;
  ColumnGeometry() = default;
  ColumnGeometry(const ConvShape& shape, int pass_rows)
      : s(shape),
        rows(uint32_t(pass_rows)),
        cols(uint32_t(pass_rows) * uint32_t(shape.out_h * shape.out_w)),
        ohw(uint32_t(shape.out_h * shape.out_w)),
        out_w(uint32_t(shape.out_w)),
        kk(uint32_t(shape.kh * shape.kw)),
        kw(uint32_t(shape.kw)),
        kc(uint32_t(shape.cin * shape.kh * shape.kw)),
        ihw(uint32_t(shape.in_h * shape.in_w)),
        in_w(uint32_t(shape.in_w)),
        cin(uint32_t(shape.cin)) {}
  // Floats of one model's columns and of one model's input.
  int64_t model_columns() const { return int64_t(kc.d) * cols.d; }
  int64_t model_input() const { return int64_t(cin.d) * rows.d * ihw.d; }
};

// Element t of the columns (t < 2^31 over the models of one launch) reads the input at the
// index returned, or nothing (-1) where it falls on the padding.
GOSSAMER_HD int64_t im2col_source(const ColumnGeometry& g, uint32_t t) {
  const uint32_t q = g.cols.mod(t), kr = g.cols.div(t);
  const uint32_t row = g.kc.mod(kr), k = g.kc.div(kr);
  const uint32_t r = g.ohw.div(q), p = q - r * g.ohw.d;
  const uint32_t oh = g.out_w.div(p), ow = p - oh * g.out_w.d;
  const uint32_t ch = g.kk.div(row), ij = row - ch * g.kk.d;
  const uint32_t i = g.kw.div(ij), j = ij - i * g.kw.d;
  const int ih = int(oh) * g.s.stride + int(i) - g.s.pad;
  const int iw = int(ow) * g.s.stride + int(j) - g.s.pad;
  if (ih < 0 || ih >= g.s.in_h || iw < 0 || iw >= g.s.in_w) return -1;
  return ((int64_t(k) * g.cin.d + ch) * g.rows.d + r) * g.ihw.d + int64_t(ih) * g.s.in_w + iw;
}

// The adjoint at input element t (t < 2^31 over the models of one launch): the sum of the
// column entries that read it, in (i, j) order.
GOSSAMER_HD float col2im_sum(const float* col, const ColumnGeometry& g, uint32_t t) {
  const uint32_t e = g.ihw.mod(t), plane = g.ihw.div(t);
  const uint32_t r = g.rows.mod(plane), kch = g.rows.div(plane);  // k cin + ch
  const uint32_t ih = g.in_w.div(e), iw = e - ih * g.in_w.d;
  // Model k's columns start at k kc cols; channel ch's rows of them at ch kh kw.
  const float* base = col + int64_t(kch) * g.kk.d * g.cols.d + int64_t(r) * g.ohw.d;
  float sum = 0.f;
  for (int i = 0; i < g.s.kh; ++i) {
    const int oy = int(ih) + g.s.pad - i;
    if (oy < 0 || oy % g.s.stride != 0 || oy / g.s.stride >= g.s.out_h) continue;
    for (int j = 0; j < g.s.kw; ++j) {
      const int ox = int(iw) + g.s.pad - j;
      if (ox < 0 || ox % g.s.stride != 0 || ox / g.s.stride >= g.s.out_w) continue;
      sum += base[int64_t(i * g.s.kw + j) * g.cols.d + int64_t(oy / g.s.stride) * g.s.out_w +
                  ox / g.s.stride];
    }
  }
  return sum;
}

}  // namespace gossamer
