// The element-wise and reduction parts of the batched CNN (cuda/cnn.cu), each with its
// R-operator twin, with the algebra of host/cnn.cpp. Activations are [model][channel][row][h][w]:
// a (model, channel, row) "plane" of h x w floats, so one model's channel is a contiguous
// rows x h x w run and one model's tensor is the [channel][row h w] matrix the GEMMs use.
// Every sum runs in a fixed order (no atomics): the same inputs give the same bits.
#include <algorithm>
#include <string>

#include "block_sum.cuh"
#include "gossamer/conv_index.hpp"
#include "kernels.cuh"

namespace gossamer {

// The image load and the pools decode their thread's index in the type I: 32 bits wherever a
// pass's tensor has fewer than 2^31 elements (64-bit division is a long software routine on
// the GPU), 64 beyond (launchers: indexed()).
#define INDEX_LOOP(t, n) for (I t = I(blockIdx.x) * blockDim.x + threadIdx.x; t < (n); t += I(blockDim.x) * gridDim.x)

// A backward kernel's write: to[e] = v, or to[e] += v where the gradient accumulates
// (cuda_plan.hpp's cnn_gradient_stored decides which).
static __device__ void put(float* to, int64_t e, float v, bool accumulate) {
  to[e] = accumulate ? to[e] + v : v;
}

// Output t of a 2 x 2 pool (stride 2; ohw outputs a plane, ow a row) over planes of ihw inputs,
// rows of iw: its window's four input indices; returns the index of its plane's first input.
template <class I>
static __device__ int64_t pool_window(I t, I ohw, int ow, int iw, int64_t ihw, int64_t (&window)[4]) {
  const int64_t plane = int64_t(t / ohw) * ihw;
  const I o = t % ohw;
  const int64_t base = plane + int64_t(2 * (o / I(ow))) * iw + 2 * (o % I(ow));
  window[0] = base, window[1] = base + 1, window[2] = base + iw, window[3] = base + iw + 1;
  return plane;
}

// Window entry e's share g_e of a pool output's gradient g: the max pool's all to its chosen
// input, the average pool's a quarter to each.
static __device__ float pool_share(PoolKind kind, int64_t e, int64_t chosen, float g) {
  return kind == PoolKind::Max ? (e == chosen ? g : 0.f) : 0.25f * g;
}

// The activation's R-backward at input x: R{dx} = act'(x) R{dy} + act''(x) R{x} dy (rx null: the
// input has no R part), d1 = act'(x) already computed; with of_output, x is the activation's
// output act(x) (derivatives_from_output).
static __device__ float act_r_backward(Activation act, float x, float d1, float dy, float rdy,
                                       const float* rx, int64_t e, bool of_output = false) {
  float r = d1 * rdy;
  if (rx)
    r += (of_output ? activate_second_derivative_of_output(act, x)
                    : activate_second_derivative(act, x)) *
         rx[e] * dy;
  return r;
}

// A max pool's choice in its window of x: the first of equal maxima.
static __device__ int64_t window_max(const float* x, const int64_t (&window)[4]) {
  int64_t best = window[0];
  for (int q = 1; q < 4; ++q)
    if (x[window[q]] > x[best]) best = window[q];
  return best;
}

template <class I>
static __global__ void load_image_f32(const float* x, int64_t x_stride, I rows, I c, I hw, I n,
                                      float* out) {
  INDEX_LOOP(t, n) {
    const I e = t % hw, plane = t / hw;
    const I r = plane % rows, kc = plane / rows;
    const I ch = kc % c, k = kc / c;
    out[t] = x[int64_t(k) * x_stride + (int64_t(r) * c + ch) * hw + e];
  }
}

// im2col and its adjoint: one thread an element (coalesced), its indices from conv_index.hpp's
// multiplicative divisions (tested on the CPU against a direct im2col). A launch covers fewer than
// 2^31 elements; the launchers split the models to keep it so.
static __global__ void im2col_f32(const float* __restrict__ x, ColumnGeometry g, uint32_t n,
                                  float* __restrict__ col) {
  for (uint32_t t = blockIdx.x * blockDim.x + threadIdx.x; t < n; t += blockDim.x * gridDim.x) {
    const int64_t src = im2col_source(g, t);
    col[t] = src < 0 ? 0.f : x[src];
  }
}

static __global__ void col2im_add_f32(const float* __restrict__ col, ColumnGeometry g, uint32_t n,
                                      bool accumulate, float* __restrict__ dx) {
  for (uint32_t t = blockIdx.x * blockDim.x + threadIdx.x; t < n; t += blockDim.x * gridDim.x)
    put(dx, t, col2im_sum(col, g, t), accumulate);
}

// One block a (model, channel) row of cols values.
static __global__ void channel_bias_f32(float* y, float* ry, const float* w, int64_t w_stride,
                                        const float* v, int64_t v_stride, int64_t b_offset,
                                        int channels, int64_t cols) {
  const int64_t kc = blockIdx.x, k = kc / channels;
  const int c = int(kc % channels);
  const float b = w[k * w_stride + b_offset + c];
  const float rb = ry ? v[k * v_stride + b_offset + c] : 0.f;
  for (int64_t q = threadIdx.x; q < cols; q += blockDim.x) {
    y[kc * cols + q] += b;
    if (ry) ry[kc * cols + q] += rb;
  }
}

// A convolution of few columns (kc <= kSmallConv), forward: one thread a column of a model, every
// output channel and the bias at once, its inputs gathered without columns (conv_index.hpp), and
// the next node's activation where it is fused (out.a set). Compiled with and without the
// R-operator (R) and R{x} (RX; the image has none): the plain pass needs a third of the R pass's
// registers. out's pointers are model 0's.
template <bool R, bool RX>
static __global__ void small_conv_f32(const float* __restrict__ x, const float* __restrict__ rx,
                                      ColumnGeometry g, const float* w, int64_t w_stride,
                                      const float* v, int64_t v_stride, int64_t w_offset,
                                      int64_t b_offset, uint32_t n, SmallConvOut out) {
  const int64_t model_out = int64_t(g.s.cout) * g.cols.d;
  for (uint32_t t = blockIdx.x * blockDim.x + threadIdx.x; t < n; t += blockDim.x * gridDim.x) {
    const uint32_t k = g.cols.div(t), col = t - k * g.cols.d;
    const float* wk = w + k * w_stride;
    const int64_t at = k * model_out + col;
    SmallConvOut here;
    here.y = out.y ? out.y + at : nullptr;  // null: nothing reads y (act_from_output)
    here.a = out.a ? out.a + at : nullptr;
    here.act = out.act;
    if (R) {
      here.ry = out.ry + at;
      here.ra = out.a ? out.ra + at : nullptr;
      const float* vk = v + k * v_stride;
      small_conv_column(g, x, RX ? rx : nullptr, k, col, wk + w_offset, wk + b_offset,
                        vk + w_offset, vk + b_offset, here);
    } else {
      small_conv_column(g, x, nullptr, k, col, wk + w_offset, wk + b_offset, nullptr, nullptr,
                        here);
    }
  }
}

// Its weight and bias gradients: one block a (model, output channel) sums over the long cols,
// every column's product at once, where cuBLAS would run a long-K GEMM of a tiny output with
// little parallelism; the columns' entries are gathered from the input as the forward does.
// out[k][w_offset + c kc + q] = beta out + sum_n a[k][c][n] col(x)[k][q][n]
// (+ a2[k][c][n] col(x2)[k][q][n]); out[k][b_offset + c] = beta out + sum_n a[k][c][n].
// Where the models' channels are too few blocks to fill a GPU (a first layer at 16 workers: 256
// blocks of 25,088 columns; its f306d6f form moved 124 GB/s on the H200, bench/NOTES.md), the
// columns are split over gridDim.y blocks a (model, channel), each writing its kc + 1 sums in
// double to partial, which small_weight_grad_finish_f32 adds in a fixed order.
static __device__ void put_small_grad(float* out, int64_t out_stride, int64_t w_offset,
                                      int64_t b_offset, int64_t k, int c, int kc, int q,
                                      double total, float beta) {
  float* dst = out + k * out_stride + (q < kc ? w_offset + int64_t(c) * kc + q : b_offset + c);
  *dst = beta == 0.f ? float(total) : beta * *dst + float(total);  // beta 0 never reads
}

// PoolGradient on the device: the pool's row plane (ih iw) and width as FastDivs.
struct PoolGradientAt {
  PoolGradient p;
  FastDiv plane, iw;
  // a at column n of (model, channel) kcout's cols: e = kcout cols + n in the activation's
  // output, its window t in the pool's output; what pool_act_backward_f32 stores at dz[e].
  __device__ float operator()(int64_t kcout, uint32_t cols, uint32_t n, int rows) const {
    const uint32_t row = plane.div(n), in_plane = n - row * plane.d;
    const uint32_t h = iw.div(in_plane), w = in_plane - h * iw.d;
    const int ohw = p.oh * p.ow;
    const int64_t t = (kcout * rows + row) * int64_t(ohw) + int64_t(h / 2) * p.ow + w / 2;
    int64_t window[4];
    pool_window(t, int64_t(ohw), p.ow, p.iw, int64_t(plane.d), window);
    const int64_t e = kcout * cols + n;
    const int64_t chosen = p.kind == PoolKind::Max ? window_max(p.x, window) : -1;
    return activate_derivative_of_output(p.act, p.x[e]) * pool_share(p.kind, e, chosen, p.dy[t]);
  }
};

// kThrough: a from the pool (PoolGradientAt) instead of a (a template, so that the plain path
// keeps its registers).
template <bool kThrough>
static __global__ void small_weight_grad_f32(const float* a, const float* x, const float* a2,
                                             const float* x2, ColumnGeometry g, uint32_t chunk,
                                             double* partial, float* out, int64_t out_stride,
                                             int64_t w_offset, int64_t b_offset, float beta,
                                             PoolGradientAt through) {
  const int cout = g.s.cout, kc = int(g.kc.d);
  const int64_t kcout = blockIdx.x, k = kcout / cout;
  const int c = int(kcout % cout);
  const uint32_t cols = g.cols.d;
  // This block's columns: [begin, end) of the model's cols.
  const uint32_t begin = blockIdx.y * chunk, end = begin + chunk < cols ? begin + chunk : cols;
  const float* ar = kThrough ? nullptr : a + kcout * cols;
  const float* a2r = a2 ? a2 + kcout * cols : nullptr;
  float acc[kSmallConv], bias = 0.f;
  for (int q = 0; q < kSmallConv; ++q) acc[q] = 0.f;
  // Four columns a thread an iteration, in the order one a time would take them (the same
  // sums), so that four columns' loads are in flight at once.
  for (uint32_t n0 = begin + threadIdx.x; n0 < end; n0 += 4 * blockDim.x) {
#pragma unroll
    for (uint32_t u = 0; u < 4; ++u) {
      const uint32_t n = n0 + u * blockDim.x;
      if (n >= end) continue;
      const float an = kThrough ? through(kcout, cols, n, int(g.rows.d)) : ar[n];
      bias += an;
      small_weight_grad_column(g, x, x2, uint32_t(k), n, an, a2r ? a2r[n] : 0.f, acc);
    }
  }
  float sums[kSmallConv + 1];  // the weights' (q < kc), then the bias's (kc)
#pragma unroll  // in registers: every index is a constant
  for (int q = 0; q <= kSmallConv; ++q) sums[q] = q == kc ? bias : q < kSmallConv ? acc[q] : 0.f;
  // Thread q < kc gets weight q's total; thread kc the bias's.
  const double total = block_sums(sums, kc + 1);
  const int q = int(threadIdx.x);
  if (q > kc) return;
  if (gridDim.y > 1)
    partial[(kcout * gridDim.y + blockIdx.y) * (kc + 1) + q] = total;
  else
    put_small_grad(out, out_stride, w_offset, b_offset, k, c, kc, q, total, beta);
}

// One thread a (model, channel, sum q): the splits' partial sums, in order.
static __global__ void small_weight_grad_finish_f32(const double* partial, int splits, int kc,
                                                    int cout, int64_t n, float* out,
                                                    int64_t out_stride, int64_t w_offset,
                                                    int64_t b_offset, float beta) {
  GRID_STRIDE(t, n) {
    const int64_t kcout = t / (kc + 1);
    const int q = int(t % (kc + 1));
    double total = 0;
    for (int s = 0; s < splits; ++s) total += partial[(kcout * splits + s) * (kc + 1) + q];
    put_small_grad(out, out_stride, w_offset, b_offset, kcout / cout, int(kcout % cout), kc, q,
                   total, beta);
  }
}

// One block a (model, channel): out = beta out + sum over the channel's cols of
// a (b or 1) + a2 (b2 or 1), in double.
static __global__ void channel_sums_f32(const float* a, const float* b, const float* a2,
                                        const float* b2, int channels, int64_t cols, float* out,
                                        int64_t out_stride, int64_t offset, float beta) {
  const int64_t kc = blockIdx.x, k = kc / channels;
  const int c = int(kc % channels);
  const int64_t base = kc * cols;
  double sum = 0;
  for (int64_t q = threadIdx.x; q < cols; q += blockDim.x) {
    sum += double(a[base + q]) * (b ? double(b[base + q]) : 1.0);
    if (a2) sum += double(a2[base + q]) * (b2 ? double(b2[base + q]) : 1.0);
  }
  sum = block_sum(sum);
  if (threadIdx.x != 0) return;
  float* target = out + k * out_stride + offset + c;
  *target = beta == 0.f ? float(sum) : beta * *target + float(sum);  // beta 0 never reads
}

static __global__ void act_forward_f32(const float* x, const float* rx, float* y, float* ry,
                                       int64_t n, Activation act) {
  GRID_STRIDE(t, n) {
    y[t] = activate(act, x[t]);
    if (ry) ry[t] = rx ? activate_derivative(act, x[t]) * rx[t] : 0.f;
  }
}

static __global__ void act_backward_add_f32(const float* x, const float* rx, const float* dy,
                                            const float* rdy, float* dx, float* rdx, int64_t n,
                                            Activation act, bool accumulate) {
  GRID_STRIDE(t, n) {
    const float d1 = activate_derivative(act, x[t]);
    put(dx, t, d1 * dy[t], accumulate);
    if (rdx) put(rdx, t, act_r_backward(act, x[t], d1, dy[t], rdy[t], rx, t), accumulate);
  }
}

// One thread an output element of a 2 x 2 pool (stride 2) or a plane of the global average.
template <class I>
static __global__ void pool_f32(PoolKind kind, const float* x, const float* rx, float* y, float* ry,
                                int32_t* arg, I n, int ih, int iw, int oh, int ow) {
  const int64_t ihw = int64_t(ih) * iw;
  const I ohw = I(oh) * I(ow);
  INDEX_LOOP(t, n) {
    if (kind == PoolKind::Gap) {  // one output a plane
      const int64_t plane = int64_t(t / ohw) * ihw;
      float s = 0.f, rs = 0.f;
      for (int64_t e = plane; e < plane + ihw; ++e) {
        s += x[e];
        if (rx) rs += rx[e];
      }
      y[t] = s / float(ihw);
      if (ry) ry[t] = rs / float(ihw);
      continue;
    }
    int64_t window[4];
    const int64_t plane = pool_window(t, ohw, ow, iw, ihw, window);
    if (kind == PoolKind::Max) {
      const int64_t best = window_max(x, window);
      if (arg) arg[t] = int32_t(best - plane);  // null: the backward finds it again
      y[t] = x[best];
      if (ry) ry[t] = rx ? rx[best] : 0.f;
    } else {
      float s = 0.f, rs = 0.f;
      for (int q = 0; q < 4; ++q) {
        s += x[window[q]];
        if (rx) rs += rx[window[q]];
      }
      y[t] = s * 0.25f;
      if (ry) ry[t] = rs * 0.25f;
    }
  }
}

// The 2 x 2 windows do not overlap, so one thread an output adds to its own inputs (or, not
// accumulating, writes all four: the max pool 0 where its input was not chosen); the global
// average runs one thread an input element.
template <class I>
static __global__ void pool_backward_f32(PoolKind kind, const float* dy, const float* rdy,
                                         const int32_t* arg, float* dx, float* rdx, I n, int ih,
                                         int iw, int oh, int ow, bool accumulate) {
  const I ihw = I(ih) * I(iw), ohw = I(oh) * I(ow);
  if (kind == PoolKind::Gap) {
    INDEX_LOOP(t, n) {
      const I p = t / ihw;
      put(dx, t, dy[p] / float(ihw), accumulate);
      if (rdx) put(rdx, t, rdy[p] / float(ihw), accumulate);
    }
    return;
  }
  INDEX_LOOP(t, n) {
    int64_t window[4];
    const int64_t plane = pool_window(t, ohw, ow, iw, int64_t(ihw), window);
    const int64_t chosen = kind == PoolKind::Max ? plane + arg[t] : -1;
    if (kind == PoolKind::Max && accumulate) {  // the other three entries stay as they are
      dx[chosen] += dy[t];
      if (rdx) rdx[chosen] += rdy[t];
      continue;
    }
    for (int64_t e : window) {
      put(dx, e, pool_share(kind, e, chosen, dy[t]), accumulate);
      if (rdx) put(rdx, e, pool_share(kind, e, chosen, rdy[t]), accumulate);
    }
  }
}

// A 2 x 2 pool's backward through the activation before it (cuda_plan.hpp's act_in_pool), the
// windows covering the activation: each window entry's share of dy (pool_share, what
// pool_backward_f32 would store) times act'(z), into the activation's input gradient dz, and with
// the R-operator act_r_backward of the shares, as act_backward_add_f32 computes them: the same
// arithmetic, by the same functions, without the activation's gradient in between. x is z, or
// with of_output the activation's output (the pool's input), from which the derivatives come and
// in which a max pool's choice is found again as its forward found it (arg unused).
template <class I>
static __global__ void pool_act_backward_f32(PoolKind kind, const float* dy, const float* rdy,
                                             const int32_t* arg, const float* x, bool of_output,
                                             const float* rz, float* dz, float* rdz, I n, int iw,
                                             int oh, int ow, Activation act, bool accumulate) {
  const I ohw = I(oh) * I(ow);
  INDEX_LOOP(t, n) {
    int64_t window[4];
    const int64_t plane = pool_window(t, ohw, ow, iw, 4 * int64_t(ohw), window);
    const int64_t chosen =
        kind != PoolKind::Max ? -1 : of_output ? window_max(x, window) : plane + arg[t];
    for (int64_t e : window) {
      const float share = pool_share(kind, e, chosen, dy[t]);
      const float d1 = of_output ? activate_derivative_of_output(act, x[e])
                                 : activate_derivative(act, x[e]);
      put(dz, e, d1 * share, accumulate);
      if (rdz)
        put(rdz, e,
            act_r_backward(act, x[e], d1, share, pool_share(kind, e, chosen, rdy[t]), rz, e,
                           of_output),
            accumulate);
    }
  }
}

static __global__ void add_f32(float* y, const float* x, int64_t n) {
  GRID_STRIDE(t, n) y[t] += x[t];
}

// GroupNorm (host/cnn.cpp has the formulas): one block a (model, row, group); the group's
// elements are cg channels' planes of that row.
struct GroupIndex {
  int64_t base, plane_stride;  // element q = (channel c0 + q / hw, e = q % hw) at base + (q / hw) plane_stride + e
  int c0;
  FastDiv hw;  // a row's channels have fewer than 2^31 elements (the launchers check)
  int64_t size;
  __device__ int64_t at(int64_t q) const {
    const uint32_t c = hw.div(uint32_t(q));
    return base + int64_t(c) * plane_stride + (uint32_t(q) - c * hw.d);
  }
  __device__ int channel(int64_t q) const { return c0 + int(hw.div(uint32_t(q))); }
};

static __device__ GroupIndex group_of(int channels, int groups, int rows, FastDiv hw) {
  const int64_t b = blockIdx.x;
  const int g = int(b % groups);
  const int r = int(b / groups % rows);
  const int64_t k = b / (int64_t(groups) * rows);
  const int cg = channels / groups;
  GroupIndex gi;
  gi.c0 = g * cg;
  gi.hw = hw;
  gi.plane_stride = int64_t(rows) * hw.d;
  gi.base = ((k * channels + gi.c0) * rows + r) * hw.d;
  gi.size = int64_t(cg) * hw.d;
  return gi;
}

// Every thread of the block gets the block's total.
static __device__ double block_total(double v) {
  __shared__ double total;
  v = block_sum(v);
  if (threadIdx.x == 0) total = v;
  __syncthreads();
  v = total;
  __syncthreads();
  return v;
}

static __global__ void group_norm_f32(const float* x, const float* rx, float* xh, float* rxh,
                                      float* y, float* ry, float* stats, const float* w,
                                      int64_t w_stride, const float* v, int64_t v_stride,
                                      int64_t p_offset, int channels, int groups, int rows,
                                      FastDiv hw, int64_t blocks) {
  const GroupIndex gi = group_of(channels, groups, rows, hw);
  const int64_t k = blockIdx.x / (int64_t(groups) * rows);
  const float* scale = w + k * w_stride + p_offset;
  const float* shift = scale + channels;
  const double size = double(gi.size);
  double sum = 0;
  for (int64_t q = threadIdx.x; q < gi.size; q += blockDim.x) sum += double(x[gi.at(q)]);
  const double mu = block_total(sum) / size;
  double sq = 0;
  for (int64_t q = threadIdx.x; q < gi.size; q += blockDim.x) {
    const double d = double(x[gi.at(q)]) - mu;
    sq += d * d;
  }
  const double sigma = sqrt(block_total(sq) / size + 1e-5);
  for (int64_t q = threadIdx.x; q < gi.size; q += blockDim.x) {
    const int64_t e = gi.at(q);
    const int c = gi.channel(q);
    const float h = float((double(x[e]) - mu) / sigma);
    xh[e] = h;
    y[e] = (1.f + scale[c]) * h + shift[c];
  }
  if (threadIdx.x == 0) stats[blockIdx.x] = float(sigma);
  if (!ry) return;
  double rsum = 0, a = 0;
  if (rx)
    for (int64_t q = threadIdx.x; q < gi.size; q += blockDim.x) {
      const int64_t e = gi.at(q);
      rsum += double(rx[e]);
      a += double(xh[e]) * double(rx[e]);  // xh[e] written by this thread above
    }
  const double rmu = block_total(rsum) / size, rsigma = block_total(a) / size;
  if (threadIdx.x == 0) stats[blocks + blockIdx.x] = float(rsigma);
  const float* rscale = v + k * v_stride + p_offset;
  const float* rshift = rscale + channels;
  for (int64_t q = threadIdx.x; q < gi.size; q += blockDim.x) {
    const int64_t e = gi.at(q);
    const int c = gi.channel(q);
    const float rh = rx ? float((double(rx[e]) - rmu - double(xh[e]) * rsigma) / sigma) : 0.f;
    rxh[e] = rh;
    ry[e] = rscale[c] * xh[e] + (1.f + scale[c]) * rh + rshift[c];
  }
}

static __global__ void group_norm_backward_f32(const float* dy, const float* rdy, const float* xh,
                                               const float* rxh, const float* stats,
                                               const float* w, int64_t w_stride, const float* v,
                                               int64_t v_stride, int64_t p_offset, int channels,
                                               int groups, int rows, FastDiv hw, int64_t blocks,
                                               bool accumulate, float* dx, float* rdx) {
  const GroupIndex gi = group_of(channels, groups, rows, hw);
  const int64_t k = blockIdx.x / (int64_t(groups) * rows);
  const float* scale = w + k * w_stride + p_offset;
  const float* rscale = rdx ? v + k * v_stride + p_offset : nullptr;
  const double size = double(gi.size), sigma = double(stats[blockIdx.x]);
  const auto dxh_of = [&](int64_t e, int c) { return double(dy[e]) * (1.0 + double(scale[c])); };
  const auto rdxh_of = [&](int64_t e, int c) {
    return double(rdy[e]) * (1.0 + double(scale[c])) + double(dy[e]) * double(rscale[c]);
  };
  double a = 0, bb = 0;
  for (int64_t q = threadIdx.x; q < gi.size; q += blockDim.x) {
    const int64_t e = gi.at(q);
    const double d = dxh_of(e, gi.channel(q));
    a += d;
    bb += d * double(xh[e]);
  }
  a = block_total(a) / size;
  bb = block_total(bb) / size;
  double ra = 0, rb = 0;
  if (rdx)
    for (int64_t q = threadIdx.x; q < gi.size; q += blockDim.x) {
      const int64_t e = gi.at(q);
      const int c = gi.channel(q);
      const double rd = rdxh_of(e, c);
      ra += rd;
      rb += rd * double(xh[e]) + dxh_of(e, c) * double(rxh[e]);
    }
  if (rdx) {
    ra = block_total(ra) / size;
    rb = block_total(rb) / size;
  }
  const double rsigma = rdx ? double(stats[blocks + blockIdx.x]) : 0.0;
  for (int64_t q = threadIdx.x; q < gi.size; q += blockDim.x) {
    const int64_t e = gi.at(q);
    const int c = gi.channel(q);
    const double d = (dxh_of(e, c) - a - double(xh[e]) * bb) / sigma;
    put(dx, e, float(d), accumulate);
    if (rdx)
      put(rdx, e,
          float(-rsigma / sigma * d +
                (rdxh_of(e, c) - ra - double(rxh[e]) * bb - double(xh[e]) * rb) / sigma),
          accumulate);
  }
}

static __global__ void batched_transpose_f32(const float* src, float* dst, int a, int b,
                                             int64_t n) {
  GRID_STRIDE(t, n) {
    const int64_t ab = int64_t(a) * b, k = t / ab, q = t % ab;
    const int i = int(q / b), j = int(q % b);  // src[k][i][j]
    dst[k * ab + int64_t(j) * a + i] = src[t];
  }
}

// launch(I{}) with I = uint32_t for n < 2^31 threads (t + the grid's stride stays below 2^32),
// else uint64_t.
template <class F>
static void indexed(int64_t n, F&& launch) {
  if (n <= 0) return;
  if (n < (int64_t(1) << 31))
    launch(uint32_t{});
  else
    launch(uint64_t{});
  CUDA_CHECK_LAUNCH();
}

#define LINEAR_LAUNCH(kernel, n, ...)                                       \
  do {                                                                      \
    if ((n) > 0) {                                                          \
      kernel<<<linear_blocks(n), kLinearBlock, 0, s>>>(__VA_ARGS__);        \
      CUDA_CHECK_LAUNCH();                                                  \
    }                                                                       \
  } while (0)

void launch_load_image(const float* x, int64_t x_stride, int rows, int models, int c, int64_t hw,
                       float* out, cudaStream_t s) {
  const int64_t n = int64_t(models) * c * rows * hw;
  indexed(n, [&](auto i) {
    using I = decltype(i);
    load_image_f32<I><<<linear_blocks(n), kLinearBlock, 0, s>>>(x, x_stride, I(rows), I(c), I(hw), I(n), out);
  });
}

constexpr int64_t kIndexLimit = (int64_t(1) << 31) - 1;

// The column kernels index one model's elements in 32 bits.
static void check_per_model(int64_t per_model, const char* what) {
  if (per_model > kIndexLimit)
    throw runtime_error(std::string(what) + ": " + std::to_string(per_model) +
                        " elements of one model in one pass exceed 2^31; lower the batch");
}

// A convolution's column geometry for a pass of `rows` rows, its divisors checked to fit 32 bits
// (the columns of one model's pass, rows oh ow, fewer than 2^31).
static ColumnGeometry geometry(const ConvShape& shape, int rows, const char* what) {
  check_per_model(int64_t(rows) * shape.out_h * shape.out_w, what);
  check_per_model(int64_t(shape.cin) * rows * shape.in_h * shape.in_w, what);
  return ColumnGeometry(shape, rows);
}

// f(first model, models, elements) over runs of the models of fewer than 2^31 elements each (one
// launch of a column kernel indexes in 32 bits).
template <class F>
static void in_model_runs(int64_t per_model, int models, const char* what, F&& f) {
  check_per_model(per_model, what);
  const int per = int(std::min<int64_t>(models, kIndexLimit / std::max<int64_t>(1, per_model)));
  for (int k0 = 0; k0 < models; k0 += per) {
    const int count = std::min(per, models - k0);
    f(k0, uint32_t(int64_t(count) * per_model));
  }
}

void launch_im2col(const float* x, const ConvShape& shape, int rows, int models, float* col,
                   cudaStream_t s) {
  const ColumnGeometry g = geometry(shape, rows, "im2col");
  in_model_runs(g.model_columns(), models, "im2col", [&](int k0, uint32_t n) {
    LINEAR_LAUNCH(im2col_f32, n, x + k0 * g.model_input(), g, n, col + k0 * g.model_columns());
  });
}

void launch_col2im_add(const float* col, const ConvShape& shape, int rows, int models, float* dx,
                       bool accumulate, cudaStream_t s) {
  const ColumnGeometry g = geometry(shape, rows, "col2im");
  in_model_runs(g.model_input(), models, "col2im", [&](int k0, uint32_t n) {
    LINEAR_LAUNCH(col2im_add_f32, n, col + k0 * g.model_columns(), g, n, accumulate,
                  dx + k0 * g.model_input());
  });
}

void launch_channel_bias(float* y, float* ry, const float* w, int64_t w_stride, const float* v,
                         int64_t v_stride, int64_t b_offset, int channels, int64_t cols,
                         int models, cudaStream_t s) {
  const int64_t blocks = int64_t(models) * channels;
  if (blocks == 0 || cols == 0) return;
  channel_bias_f32<<<unsigned(blocks), cols < kLinearBlock ? 32 * unsigned(CEIL_DIV(cols, 32)) : kLinearBlock, 0, s>>>(
      y, ry, w, w_stride, v, v_stride, b_offset, channels, cols);
  CUDA_CHECK_LAUNCH();
}

static void check_small(const ConvShape& shape, const char* what) {
  if (!few_columns(shape))
    throw runtime_error(std::string(what) + ": " + std::to_string(shape.cin * shape.kh * shape.kw) +
                        " columns exceed " + std::to_string(kSmallConv));
}

void launch_small_conv(const float* x, const float* rx, const ConvShape& shape, int rows,
                       int models, const float* w, int64_t w_stride, const float* v,
                       int64_t v_stride, const SmallConvOut& out, cudaStream_t s) {
  check_small(shape, "small_conv");
  const ColumnGeometry g = geometry(shape, rows, "small_conv");
  const int64_t model_out = int64_t(shape.cout) * g.cols.d;
  in_model_runs(g.cols.d, models, "small_conv", [&](int k0, uint32_t n) {
    const float* xk = x + k0 * g.model_input();
    const float* wk = w + k0 * w_stride;
    const auto shift = [&](float* p) { return p ? p + k0 * model_out : nullptr; };
    SmallConvOut o = out;
    o.y = shift(out.y), o.ry = shift(out.ry), o.a = shift(out.a), o.ra = shift(out.ra);
    const float* vk = v ? v + k0 * v_stride : nullptr;
    if (o.ry && rx)
      LINEAR_LAUNCH((small_conv_f32<true, true>), n, xk, rx + k0 * g.model_input(), g, wk,
                    w_stride, vk, v_stride, shape.w_offset, shape.b_offset, n, o);
    else if (o.ry)
      LINEAR_LAUNCH((small_conv_f32<true, false>), n, xk, nullptr, g, wk, w_stride, vk, v_stride,
                    shape.w_offset, shape.b_offset, n, o);
    else
      LINEAR_LAUNCH((small_conv_f32<false, false>), n, xk, nullptr, g, wk, w_stride, nullptr,
                    v_stride, shape.w_offset, shape.b_offset, n, o);
  });
}

void launch_small_weight_grad(const float* a, const float* x, const float* a2, const float* x2,
                              const ConvShape& shape, int rows, int models, double* scratch,
                              int64_t scratch_doubles, float* out, int64_t out_stride, float beta,
                              cudaStream_t s, const PoolGradient* through) {
  check_small(shape, "small_weight_grad");
  PoolGradientAt at;
  if (through) {
    if (a || a2 || !through->dy || !through->x || through->kind == PoolKind::Gap ||
        through->ih != shape.out_h || through->iw != shape.out_w ||
        through->oh * 2 != through->ih || through->ow * 2 != through->iw)
      throw runtime_error("small_weight_grad: a gradient through a pool of " +
                          std::to_string(through->ih) + " x " + std::to_string(through->iw) +
                          " that is not a 2 x 2 pool of the convolution's whole output");
    at = PoolGradientAt{*through, FastDiv(uint32_t(through->ih * through->iw)),
                        FastDiv(uint32_t(through->iw))};
  } else if (!a) {
    throw runtime_error("small_weight_grad: no output gradient");
  }
  const int64_t blocks = int64_t(models) * shape.cout;
  if (blocks == 0) return;
  const ColumnGeometry g = geometry(shape, rows, "small_weight_grad");
  const int sums = int(g.kc.d) + 1;
  const uint32_t round = 4 * kReduceThreads;  // a block's columns a turn of its loop
  const int64_t splits =
      small_grad_splits(blocks, g.cols.d, round, scratch_doubles / (blocks * sums));
  const uint32_t chunk = uint32_t(CEIL_DIV(CEIL_DIV(int64_t(g.cols.d), splits), round) * round);
  const dim3 grid{unsigned(blocks), unsigned(splits)};
  if (through)
    small_weight_grad_f32<true><<<grid, kReduceThreads, 0, s>>>(
        a, x, a2, x2, g, chunk, scratch, out, out_stride, shape.w_offset, shape.b_offset, beta,
        at);
  else
    small_weight_grad_f32<false><<<grid, kReduceThreads, 0, s>>>(
        a, x, a2, x2, g, chunk, scratch, out, out_stride, shape.w_offset, shape.b_offset, beta,
        at);
  CUDA_CHECK_LAUNCH();
  if (splits > 1)
    LINEAR_LAUNCH(small_weight_grad_finish_f32, blocks * sums, scratch, int(splits), sums - 1,
                  shape.cout, blocks * sums, out, out_stride, shape.w_offset, shape.b_offset, beta);
}

void launch_channel_sums(const float* a, const float* b, const float* a2, const float* b2,
                         int channels, int64_t cols, int models, float* out, int64_t out_stride,
                         int64_t offset, float beta, cudaStream_t s) {
  const int64_t blocks = int64_t(models) * channels;
  if (blocks == 0) return;
  channel_sums_f32<<<unsigned(blocks), kReduceThreads, 0, s>>>(a, b, a2, b2, channels, cols, out,
                                                               out_stride, offset, beta);
  CUDA_CHECK_LAUNCH();
}

void launch_act_forward(const float* x, const float* rx, float* y, float* ry, int64_t n,
                        Activation act, cudaStream_t s) {
  LINEAR_LAUNCH(act_forward_f32, n, x, rx, y, ry, n, act);
}

void launch_act_backward_add(const float* x, const float* rx, const float* dy, const float* rdy,
                             float* dx, float* rdx, int64_t n, Activation act, bool accumulate,
                             cudaStream_t s) {
  LINEAR_LAUNCH(act_backward_add_f32, n, x, rx, dy, rdy, dx, rdx, n, act, accumulate);
}

void launch_pool(PoolKind kind, const float* x, const float* rx, float* y, float* ry, int32_t* arg,
                 int64_t planes, int ih, int iw, int oh, int ow, cudaStream_t s) {
  const int64_t n = planes * oh * ow;
  indexed(n, [&](auto i) {
    using I = decltype(i);
    pool_f32<I><<<linear_blocks(n), kLinearBlock, 0, s>>>(kind, x, rx, y, ry, arg, I(n), ih, iw, oh, ow);
  });
}

void launch_pool_backward(PoolKind kind, const float* dy, const float* rdy, const int32_t* arg,
                          float* dx, float* rdx, int64_t planes, int ih, int iw, int oh, int ow,
                          bool accumulate, cudaStream_t s) {
  if (!accumulate && kind != PoolKind::Gap && (ih != 2 * oh || iw != 2 * ow))
    throw runtime_error("pool_backward: the windows of a " + std::to_string(ih) + " x " +
                        std::to_string(iw) + " input leave elements out; it must accumulate");
  const int64_t n = planes * (kind == PoolKind::Gap ? int64_t(ih) * iw : int64_t(oh) * ow);
  indexed(n, [&](auto i) {
    using I = decltype(i);
    pool_backward_f32<I><<<linear_blocks(n), kLinearBlock, 0, s>>>(kind, dy, rdy, arg, dx, rdx, I(n),
                                                                   ih, iw, oh, ow, accumulate);
  });
}

void launch_pool_act_backward(PoolKind kind, const float* dy, const float* rdy,
                              const int32_t* arg, const float* x, bool of_output, const float* rz,
                              float* dz, float* rdz, int64_t planes, int ih, int iw, int oh,
                              int ow, Activation act, bool accumulate, cudaStream_t s) {
  if (kind == PoolKind::Gap || ih != 2 * oh || iw != 2 * ow)
    throw runtime_error("pool_act_backward: a 2 x 2 pool whose windows cover its " +
                        std::to_string(ih) + " x " + std::to_string(iw) + " input expected");
  const int64_t n = planes * oh * ow;
  indexed(n, [&](auto i) {
    using I = decltype(i);
    pool_act_backward_f32<I><<<linear_blocks(n), kLinearBlock, 0, s>>>(
        kind, dy, rdy, arg, x, of_output, rz, dz, rdz, I(n), iw, oh, ow, act, accumulate);
  });
}

void launch_add(float* y, const float* x, int64_t n, cudaStream_t s) {
  LINEAR_LAUNCH(add_f32, n, y, x, n);
}

void launch_add_or_copy(float* y, const float* x, int64_t n, bool accumulate, cudaStream_t s) {
  if (accumulate)
    launch_add(y, x, n, s);
  else if (n > 0)
    CUDA_CHECK(cudaMemcpyAsync(y, x, size_t(n) * sizeof(float), cudaMemcpyDeviceToDevice, s));
}

void launch_group_norm(const float* x, const float* rx, float* xh, float* rxh, float* y, float* ry,
                       float* stats, const float* w, int64_t w_stride, const float* v,
                       int64_t v_stride, int64_t p_offset, int channels, int groups, int rows,
                       int hw, int models, cudaStream_t s) {
  const int64_t blocks = int64_t(models) * rows * groups;
  if (blocks == 0) return;
  check_per_model(int64_t(channels) * hw, "group_norm");
  group_norm_f32<<<unsigned(blocks), kReduceThreads, 0, s>>>(
      x, rx, xh, rxh, y, ry, stats, w, w_stride, v, v_stride, p_offset, channels, groups, rows,
      FastDiv(uint32_t(hw)), blocks);
  CUDA_CHECK_LAUNCH();
}

void launch_group_norm_backward(const float* dy, const float* rdy, const float* xh,
                                const float* rxh, const float* stats, const float* w,
                                int64_t w_stride, const float* v, int64_t v_stride,
                                int64_t p_offset, int channels, int groups, int rows, int hw,
                                int models, bool accumulate, float* dx, float* rdx,
                                cudaStream_t s) {
  const int64_t blocks = int64_t(models) * rows * groups;
  if (blocks == 0) return;
  check_per_model(int64_t(channels) * hw, "group_norm");
  group_norm_backward_f32<<<unsigned(blocks), kReduceThreads, 0, s>>>(
      dy, rdy, xh, rxh, stats, w, w_stride, v, v_stride, p_offset, channels, groups, rows,
      FastDiv(uint32_t(hw)), blocks, accumulate, dx, rdx);
  CUDA_CHECK_LAUNCH();
}

void launch_batched_transpose(const float* src, float* dst, int models, int a, int b,
                              cudaStream_t s) {
  const int64_t n = int64_t(models) * a * b;
  LINEAR_LAUNCH(batched_transpose_f32, n, src, dst, a, b, n);
}

}  // namespace gossamer
