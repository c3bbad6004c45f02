// The launchers of gossamer's kernels (docs/ARCHITECTURE.md, "Code conventions": kernel, launcher,
// public entry). Each takes device pointers and a stream, returns at once, and checks its launch.
// One file per operation holds the kernel and its launcher.
#pragma once
#include <cstdint>

#include "cuda_check.cuh"
#include "gossamer/activations.hpp"
#include "gossamer/augment.hpp"
#include "gossamer/conv_index.hpp"
#include "gossamer/model.hpp"
#include "gossamer/philox.hpp"

namespace gossamer {

// The training-loss window on the device (the CPU backend keeps the same on the host): the
// mean minibatch loss of each recorded step joins it; the first step whose mean is not finite
// is kept.
struct DeviceLossState {
  double sum;
  long long steps;
  long long first_nonfinite;
  long long step;  // the current step, written by the sampler
  // The first step whose update wrote a NaN or Inf into W / into the momentum (gossip.cu).
  long long first_nonfinite_weights;
  long long first_nonfinite_momentum;
};
constexpr DeviceLossState kFreshLossState{0, 0, -1, 0, -1, -1};

// sample.cu: idx[k*batch + j] = worker g = first_worker + k's j-th training index at `step`
// (Philox, as the CPU), from partition part g (part 0 for every worker when shared);
// state->step = step when state is given.
void launch_sample(const int64_t* offsets, const int64_t* shard_indices, bool shared, uint64_t seed,
                   int64_t step, int first_worker, int workers, int batch, int64_t* idx,
                   DeviceLossState* state, cudaStream_t s);
// sample.cu: x_out[r] = x[idx[r]] (features floats), y_out[r] = y[idx[r]], r < rows.
void launch_gather_rows(const float* x, const int32_t* y, int features, const int64_t* idx,
                        int64_t rows, float* x_out, int32_t* y_out, cudaStream_t s);

// sample.cu: the gather with each row cropped and flipped (augment.hpp) by the draws of worker
// first_worker + r / batch, slot r % batch, at state->step (written by the sampler).
void launch_gather_augmented(const float* x, const int32_t* y, int features, const int64_t* idx,
                             int64_t rows, int batch, int first_worker, const AugmentShape& a,
                             uint64_t seed, const DeviceLossState* state, float* x_out,
                             int32_t* y_out, cudaStream_t s);

// gossip.cu: the fused gossip + update (see there). row_ptr == nullptr: P = I. With state, a
// NaN or Inf written into W' or buf' sets its first_nonfinite_{weights,momentum} to state->step.
// A shard's CSR columns >= m read row (column - m) of the halo arrays (ld floats a row): the
// foreign neighbours' W, and with atc their G and momentum.
struct GossipParams {
  float lr, mu, wd;
  bool nesterov, atc;
};
struct HaloRows {
  const float* w = nullptr;
  const float* g = nullptr;
  const float* buf = nullptr;
};
void launch_gossip_update(const int* row_ptr, const int* col, const float* val, int m, int64_t ld,
                          const float* w, const float* g, const float* buf, float* buf_out,
                          float* w_out, const HaloRows& halo, const GossipParams& p,
                          DeviceLossState* state, cudaStream_t s);

// softmax_xent.cu: rows = models * rows_per_model logit rows of `classes`; the label of row r
// of model k is y[k * y_stride + r]. Loss and correctness per row; logits replaced by
// (softmax - onehot) * scale. With rlogits (the R-forward of the logits): rlogits replaced by
// R{dL/dz} = p .* (rz - <p, rz>) * scale.
void launch_softmax_xent(float* logits, float* rlogits, const int32_t* y, int64_t y_stride,
                         int rows_per_model, int models, int classes, float scale, float* loss,
                         unsigned char* correct, cudaStream_t s);

// mlp.cu, element-wise parts of a layer over models x rows x out values:
//   z += b (the bias of model k at w + k*w_stride + b_offset); a = act(z) when a != nullptr;
//   R pass (rz != nullptr): rz += bv; ra = act'(z) rz when ra != nullptr.
void launch_bias_act(float* z, float* a, float* rz, float* ra, const float* w, int64_t w_stride,
                     const float* v, int64_t v_stride, int64_t b_offset, int rows, int out,
                     int models, Activation act, cudaStream_t s);
//   dz = da .* act'(z); R pass: rdz = rda .* act'(z) + da .* act''(z) .* rz.
void launch_act_backward(const float* da, const float* rda, const float* z, const float* rz,
                         float* dz, float* rdz, int64_t n, Activation act, cudaStream_t s);
//   out[k*out_stride + o] = beta out + sum_r dz[k][r][o]  (the bias gradient).
void launch_column_sums(const float* dz, int rows, int out, int models, float* dst,
                        int64_t dst_stride, float beta, cudaStream_t s);

// cnn_kernels.cu, the batched CNN's parts (cnn.cu) over activations [model][channel][row][h][w]:
//   out = the rows of x (model k's `rows` rows of c x hw at x + k * x_stride) as [k][c][row][hw].
void launch_load_image(const float* x, int64_t x_stride, int rows, int models, int c, int64_t hw,
                       float* out, cudaStream_t s);
//   col[k][(ch, i, j)][(row, oh, ow)] = x at (oh stride + i - pad, ow stride + j - pad), 0 outside;
//   col2im_add: dx += its adjoint.
void launch_im2col(const float* x, const ConvShape& shape, int rows, int models, float* col,
                   cudaStream_t s);
void launch_col2im_add(const float* col, const ConvShape& shape, int rows, int models, float* dx,
                       bool accumulate, cudaStream_t s);
//   A convolution of kc <= kSmallConv columns (conv_index.hpp) without columns: the forward
//   y_k = W_k col(x_k) + b_k (ry_k = V_k col(x_k) + W_k col(rx_k) + v_k when out.ry is set; rx
//   may be null; out.a, out.ra: the next node's activation, fused), W_k at
//   w + k w_stride + shape.w_offset; and its weight and bias gradients
//   out[k][w_offset + c kc + q] = beta out + sum_n a[k][c][n] col(x)[k][q][n] (+ a2 col(x2)),
//   out[k][b_offset + c] = beta out + sum_n a[k][c][n].
void launch_small_conv(const float* x, const float* rx, const ConvShape& shape, int rows,
                       int models, const float* w, int64_t w_stride, const float* v,
                       int64_t v_stride, const SmallConvOut& out, cudaStream_t s);
enum class PoolKind { Max, Avg, Gap };
// A convolution's output gradient a found on the fly from the 2 x 2 pool after its activation
// (the CUDA CNN's weight_grad_through_pool): dy the pool's output gradient, x the activation's
// output (ih x iw a row, the pool's oh x ow), a[e] = act'(x[e]) (from the output) times e's
// share of its window's dy, as launch_pool_act_backward would store it.
struct PoolGradient {
  const float* dy = nullptr;
  const float* x = nullptr;
  PoolKind kind = PoolKind::Max;
  Activation act = Activation::Relu;
  int ih = 0, iw = 0, oh = 0, ow = 0;
};
// scratch: room for partial sums (scratch_doubles doubles) where the columns are split over
// blocks (small_grad_splits); any free device memory, none needed. through (a and a2 null): a
// from the pool after the activation instead.
void launch_small_weight_grad(const float* a, const float* x, const float* a2, const float* x2,
                              const ConvShape& shape, int rows, int models, double* scratch,
                              int64_t scratch_doubles, float* out, int64_t out_stride, float beta,
                              cudaStream_t s, const PoolGradient* through = nullptr);
//   y[k][c][:] += w_k[b_offset + c]; ry (when set) += v_k[b_offset + c].
void launch_channel_bias(float* y, float* ry, const float* w, int64_t w_stride, const float* v,
                         int64_t v_stride, int64_t b_offset, int channels, int64_t cols, int models,
                         cudaStream_t s);
//   out[k * out_stride + offset + c] = beta out + sum over the cols of [k][c] of
//   a (b or 1) + a2 (b2 or 1)  (a2 may be null): biases', GroupNorm's parameters' gradients.
void launch_channel_sums(const float* a, const float* b, const float* a2, const float* b2,
                         int channels, int64_t cols, int models, float* out, int64_t out_stride,
                         int64_t offset, float beta, cudaStream_t s);
// The backward kernels add to dx (and rdx) when `accumulate`, else store (cuda_plan.hpp's
// cnn_gradient_stored: the node's one reader writes all of its gradient).
//   y = act(x); ry = act'(x) rx (0 without rx).  Backward: dx += act'(x) dy;
//   rdx += act'(x) rdy + act''(x) rx dy.
void launch_act_forward(const float* x, const float* rx, float* y, float* ry, int64_t n,
                        Activation act, cudaStream_t s);
void launch_act_backward_add(const float* x, const float* rx, const float* dy, const float* rdy,
                             float* dx, float* rdx, int64_t n, Activation act, bool accumulate,
                             cudaStream_t s);
//   2 x 2 max / average pools (stride 2) and the global average over `planes` planes of
//   ih x iw; the max pool keeps each output's input element (arg); backward adds into dx (stores
//   only where the windows cover the input: ih = 2 oh, iw = 2 ow).
void launch_pool(PoolKind kind, const float* x, const float* rx, float* y, float* ry, int32_t* arg,
                 int64_t planes, int ih, int iw, int oh, int ow, cudaStream_t s);
void launch_pool_backward(PoolKind kind, const float* dy, const float* rdy, const int32_t* arg,
                          float* dx, float* rdx, int64_t planes, int ih, int iw, int oh, int ow,
                          bool accumulate, cudaStream_t s);
//   The pool's backward through the activation before it (act_in_pool): dz (rdz) += act'(z) times
//   the pool's gradient share (R as launch_act_backward_add), z the activation's input.
// x: the activation's input z, or with of_output its output (the pool's input), in which a max
// pool's choices are found again (arg null).
void launch_pool_act_backward(PoolKind kind, const float* dy, const float* rdy, const int32_t* arg,
                              const float* x, bool of_output, const float* rz, float* dz,
                              float* rdz, int64_t planes, int ih, int iw, int oh, int ow,
                              Activation act, bool accumulate, cudaStream_t s);
//   y += x over n floats; launch_add_or_copy: y = x when not accumulating.
void launch_add(float* y, const float* x, int64_t n, cudaStream_t s);
void launch_add_or_copy(float* y, const float* x, int64_t n, bool accumulate, cudaStream_t s);
//   GroupNorm of each (model, row, group), the parameters (c scales 1 + g, then c shifts) at
//   p_offset: x^ into xh, y; with ry: R{x^} into rxh and R{y}; stats: sigma, then R{sigma}
//   (2 x models x rows x groups floats). Backward: dx (and rdx) += the input's gradient.
void launch_group_norm(const float* x, const float* rx, float* xh, float* rxh, float* y, float* ry,
                       float* stats, const float* w, int64_t w_stride, const float* v,
                       int64_t v_stride, int64_t p_offset, int channels, int groups, int rows,
                       int hw, int models, cudaStream_t s);
void launch_group_norm_backward(const float* dy, const float* rdy, const float* xh,
                                const float* rxh, const float* stats, const float* w,
                                int64_t w_stride, const float* v, int64_t v_stride,
                                int64_t p_offset, int channels, int groups, int rows, int hw,
                                int models, bool accumulate, float* dx, float* rdx, cudaStream_t s);
//   dst[k][j][i] = src[k][i][j] for i < a, j < b.
void launch_batched_transpose(const float* src, float* dst, int models, int a, int b,
                              cudaStream_t s);

// init.cu: W[k][i] = the initial weight i of worker first_worker + k (philox.hpp
// initial_weight) inside each layer's weights, 0 elsewhere (biases, padding). At most
// kMaxInitLayers layers.
constexpr int kMaxInitLayers = 64;  // a CNN counts each convolution and shortcut
struct InitLayers {
  int count;
  int in[kMaxInitLayers], out[kMaxInitLayers];
  long long w_offset[kMaxInitLayers], b_offset[kMaxInitLayers];
};
void launch_init_weights(float* W, int first_worker, int m, int64_t ld, const InitLayers& layers,
                         bool kaiming, uint64_t seed, bool same_init, cudaStream_t s);

// reduce.cu: reductions over the m rows of an m x ld matrix (first d columns), in double, in
// a fixed order (same bits every run).
//   mean64[i] = (1/m) sum_k a[k][i], and mean32 the same in float (either may be null).
void launch_row_mean(const float* a, int m, int64_t ld, int64_t d, double* mean64, float* mean32,
                     cudaStream_t s);
//   sum64[i] = sum_k a[k][i] in worker order (a shard's part of a sharded mean; the padding 0).
void launch_row_sum(const float* a, int m, int64_t ld, int64_t d, double* sum64, cudaStream_t s);
//   mean64[i] = sum[i] / divisor, and mean32 the same in float (either may be null; ld values,
//   the padding 0): a sharded mean from the shards' summed sums.
void launch_divide_row(const double* sum, int64_t ld, int64_t d, double divisor, double* mean64,
                       float* mean32, cudaStream_t s);
//   a[k][i] = row[i] for every k, i < d.
void launch_set_rows(float* a, int m, int64_t ld, int64_t d, const float* row, cudaStream_t s);
//   a[k][i] = (1/m) sum_j a[j][i] for every k (C-SGD's gradient, local SGD's averaging).
void launch_average_rows(float* a, int m, int64_t ld, int64_t d, cudaStream_t s);
// Sum of squares, deterministic: *result = sum_k sum_i (a[k][i] - mean[i])^2 over an m x ld
// matrix with mean (mean == nullptr: no centring); partials has kReduceBlocks doubles.
constexpr int kReduceBlocks = 256;
void launch_sum_squares(const float* a, const double* mean, int m, int64_t ld, int64_t d,
                        double* partials, double* result, cudaStream_t s);
//   *flag = 1 if any of a[0..n) is NaN or Inf (flag zeroed by the launcher first).
void launch_any_nonfinite(const float* a, int64_t n, int* flag, cudaStream_t s);
// Per model k: loss_sum[k] += sum_r loss[k][r], correct_sum[k] += sum_r correct[k][r].
void launch_model_sums(const float* loss, const unsigned char* correct, int rows, int models,
                       double* loss_sum, double* correct_sum, cudaStream_t s);
// The mean of n row losses joins the window of `state`.
void launch_record_loss(const float* loss, int64_t n, DeviceLossState* state, cudaStream_t s);
//   a[k][i] += eps[(per_worker ? k : 0) * ld + i] over m x ld.
void launch_add_rows(float* a, const float* eps, bool per_worker, int m, int64_t ld,
                     cudaStream_t s);
//   a[k][i] += float(sigma N(0,1)_i) for every k, i < d: Philox (seed, Curvature, stream, i),
//   as Backend::perturb_gaussian draws on the host.
void launch_add_gaussian(float* a, int m, int64_t ld, int64_t d, double sigma, uint64_t seed,
                         uint32_t stream, cudaStream_t s);
//   a[k][i] += float(rho mean[i] / sqrt(*norm2)) for every k (0 when *norm2 == 0): SAM's step,
//   with the squared norm read on the device.
void launch_add_scaled_row(float* a, int m, int64_t ld, int64_t d, const double* mean,
                           const double* norm2, double rho, cudaStream_t s);
// The ensemble of claim 1 for rows of logits [models][rows][classes]: per row, the sum of the
// models' softmax joins probs (rows x classes doubles; zeroed on the first pass); the last
// pass writes out[3r..3r+2] = (top probability, top == label, probability of the label) of
// the mean over total_models.
void launch_ensemble_rows(const float* logits, const int32_t* y, int rows, int models, int classes,
                          int total_models, bool first, bool last, double* probs, double* out,
                          cudaStream_t s);

// vectors.cu: the curvature blocks' row operations over rows x ld (first d columns).
//   a[r][i] = curvature_probe(kind, seed, stream + r / repeat, i) (philox.hpp), as the host draws.
void launch_fill_probes(float* a, int64_t rows, int64_t ld, int64_t d, Probe kind, uint64_t seed,
                        uint32_t stream, int64_t repeat, cudaStream_t s);
//   out[r] = sum_i a[r][i] b[r][i] in double, a fixed order.
void launch_row_dots(const float* a, const float* b, int64_t rows, int64_t ld, int64_t d,
                     double* out, cudaStream_t s);
//   y[r] += c[r] x[broadcast ? 0 : r];  x[r] *= c[r]  (c: rows doubles on the device).
void launch_axpy_rows(float* y, const float* x, bool broadcast, const double* c, int64_t rows,
                      int64_t ld, int64_t d, cudaStream_t s);
void launch_scale_rows(float* x, const double* c, int64_t rows, int64_t ld, int64_t d,
                       cudaStream_t s);

}  // namespace gossamer
