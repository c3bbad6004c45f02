// The index arithmetic and per-element bodies of the batched CNN's column kernels
// (cuda/cnn_kernels.cu), for host and device: the CUDA kernels call these once an element (or a
// column), and tests/test_cnn.cpp checks them on the CPU against a direct im2col, its adjoint and
// a float64 convolution. Layouts (cuda/cnn.cu): activations
// [model][channel][row][h][w]; the columns of model k [k][(ch, i, j)][(row, oh, ow)].
#pragma once
#include <algorithm>
#include <cstdint>

#include "gossamer/activations.hpp"
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
  FastDiv rows, cols, ohw, out_w, kk, kw, kc, ihw, in_w, cin, stride;
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
        cin(uint32_t(shape.cin)),
        stride(uint32_t(shape.stride)) {}
  // Floats of one model's columns and of one model's input.
  int64_t model_columns() const { return int64_t(kc.d) * cols.d; }
  int64_t model_input() const { return int64_t(cin.d) * rows.d * ihw.d; }
};

// Column n of model k (one output position: row r, oh, ow): where its window starts. base is
// model k's input at row r, channel 0.
struct ColumnPoint {
  int64_t base;
  int ih0, iw0;
};
GOSSAMER_HD ColumnPoint column_point(const ColumnGeometry& g, uint32_t k, uint32_t n) {
  const uint32_t r = g.ohw.div(n), p = n - r * g.ohw.d;
  const uint32_t oh = g.out_w.div(p), ow = p - oh * g.out_w.d;
  return {(int64_t(k) * g.cin.d * g.rows.d + r) * g.ihw.d, int(oh) * g.s.stride - g.s.pad,
          int(ow) * g.s.stride - g.s.pad};
}

// Row q of the columns (input channel ch, kernel tap i, j); offset is channel ch's plane.
struct ColumnTap {
  int64_t offset;
  int i, j;
};
GOSSAMER_HD ColumnTap column_tap(const ColumnGeometry& g, uint32_t q) {
  const uint32_t ch = g.kk.div(q), ij = q - ch * g.kk.d;
  const uint32_t i = g.kw.div(ij), j = ij - i * g.kw.d;
  return {int64_t(ch) * g.rows.d * g.ihw.d, int(i), int(j)};
}

// The input index that column entry (tap, point) reads, or -1 where it falls on the padding.
GOSSAMER_HD int64_t column_source(const ColumnGeometry& g, const ColumnPoint& p, const ColumnTap& t) {
  const int ih = p.ih0 + t.i, iw = p.iw0 + t.j;
  if (ih < 0 || ih >= g.s.in_h || iw < 0 || iw >= g.s.in_w) return -1;
  return p.base + t.offset + int64_t(ih) * g.s.in_w + iw;
}

// Element t of the columns (t < 2^31 over the models of one launch): column_source of its
// (row q, column n) of model k.
GOSSAMER_HD int64_t im2col_source(const ColumnGeometry& g, uint32_t t) {
  const uint32_t n = g.cols.mod(t), kq = g.cols.div(t);
  const uint32_t q = g.kc.mod(kq), k = g.kc.div(kq);
  return column_source(g, column_point(g, k, n), column_tap(g, q));
}

// Convolutions of few columns (kc <= kSmallConv: a first layer on the image, a 1 x 1 shortcut, a
// small classifier) run without columns: each output column gathers its kc inputs itself.
constexpr int kSmallConv = 32;
inline bool few_columns(const ConvShape& c) { return c.cin * c.kh * c.kw <= kSmallConv; }

// The small weight gradient's split of each (model, channel)'s columns over blocks
// (cuda/cnn_kernels.cu): enough blocks a (model, channel) to bring the grid to kSmallGradBlocks
// (about eight an SM of an H100 or H200), at most one a `round` columns (a whole turn of a block's
// loop) and at most max_splits (the room for their partial sums); 1 where the channels fill it.
constexpr int64_t kSmallGradBlocks = 1024;
inline int64_t small_grad_splits(int64_t blocks, int64_t cols, int64_t round, int64_t max_splits) {
  if (blocks >= kSmallGradBlocks) return 1;
  const int64_t want = (kSmallGradBlocks + blocks - 1) / blocks;
  return std::max<int64_t>(1, std::min({want, cols / round, max_splits}));
}

// Where small_conv_column writes, each at model k's column n of channel 0 (channel c cols
// further): y and, with the R-operator, ry; with a fused activation (a set), also the next node's
// a = act(y) and ra = act'(y) ry, as that node's own kernel would.
struct SmallConvOut {
  float *y = nullptr, *ry = nullptr, *a = nullptr, *ra = nullptr;
  Activation act = Activation::Relu;
};

// The forward of such a convolution at column n of model k, every output channel at once:
//   y[c cols] = sum_q w[c kc + q] col[q][n] + b[c]
// and with ry (the R-operator; v, vb the direction's weights and biases):
//   ry[c cols] = sum_q (v[c kc + q] col[q][n] + w[c kc + q] rcol[q][n]) + vb[c],
// col and rcol the columns of x and rx (rx null: rcol = 0). w and b are model k's.
GOSSAMER_HD void small_conv_column(const ColumnGeometry& g, const float* x, const float* rx,
                                   uint32_t k, uint32_t n, const float* w, const float* b,
                                   const float* v, const float* vb, const SmallConvOut& out) {
  const int kc = int(g.kc.d);
  const ColumnPoint p = column_point(g, k, n);
  float xv[kSmallConv], rxv[kSmallConv];
GOSSAMER_UNROLL  // xv, rxv stay in registers: every index is a constant
  for (int q = 0; q < kSmallConv; ++q) {
    xv[q] = rxv[q] = 0.f;
    if (q >= kc) continue;
    const int64_t src = column_source(g, p, column_tap(g, uint32_t(q)));
    if (src < 0) continue;
    xv[q] = x[src];
    if (rx) rxv[q] = rx[src];
  }
  for (int c = 0; c < g.s.cout; ++c) {
    const int64_t at = int64_t(c) * g.cols.d;
    const float* wc = w + int64_t(c) * kc;
    float acc = 0.f;
GOSSAMER_UNROLL
    for (int q = 0; q < kSmallConv; ++q)
      if (q < kc) acc += wc[q] * xv[q];
    const float y = acc + b[c];
    if (out.y) out.y[at] = y;
    if (out.a) out.a[at] = activate(out.act, y);
    if (!out.ry) continue;
    const float* vc = v + int64_t(c) * kc;
    float racc = 0.f;
GOSSAMER_UNROLL
    for (int q = 0; q < kSmallConv; ++q)
      if (q < kc) racc += vc[q] * xv[q] + wc[q] * rxv[q];
    const float ry = racc + vb[c];
    out.ry[at] = ry;
    if (out.a) out.ra[at] = activate_derivative(out.act, y) * ry;
  }
}

// The weight-gradient terms of such a convolution at column n of model k:
//   acc[q] += a col[q][n] + a2 col2[q][n]   (q < kc)
// col and col2 the columns of x and x2 (x2 null: no second term).
GOSSAMER_HD void small_weight_grad_column(const ColumnGeometry& g, const float* x, const float* x2,
                                          uint32_t k, uint32_t n, float a, float a2,
                                          float (&acc)[kSmallConv]) {
  const int kc = int(g.kc.d);
  const ColumnPoint p = column_point(g, k, n);
GOSSAMER_UNROLL
  for (int q = 0; q < kSmallConv; ++q) {
    if (q >= kc) continue;
    const int64_t src = column_source(g, p, column_tap(g, uint32_t(q)));
    if (src < 0) continue;
    acc[q] += a * x[src] + (x2 ? a2 * x2[src] : 0.f);
  }
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
    if (oy < 0) break;  // oy falls as i grows
    const uint32_t oh = g.stride.div(uint32_t(oy));
    if (oh * g.stride.d != uint32_t(oy) || oh >= uint32_t(g.s.out_h)) continue;
    for (int j = 0; j < g.s.kw; ++j) {
      const int ox = int(iw) + g.s.pad - j;
      if (ox < 0) break;
      const uint32_t ow = g.stride.div(uint32_t(ox));
      if (ow * g.stride.d != uint32_t(ox) || ow >= uint32_t(g.s.out_w)) continue;
      sum += base[int64_t(i * g.s.kw + j) * g.cols.d + int64_t(oh) * g.s.out_w + ow];
    }
  }
  return sum;
}

}  // namespace gossamer
