// The fused gossip + update of D-SGD (docs/ARCHITECTURE.md, "Definitions"): for every worker k and column i,
//   v = g + wd w;  buf' = mu buf + v;  u = nesterov ? v + mu buf' : (mu > 0 ? buf' : v)
//   default: W'[k] = sum_j P_kj W[j] - lr u[k]      atc: W'[k] = sum_j P_kj (W[j] - lr u[j])
// One pass over W, G and buf; W' and buf' are separate buffers (ping-pong): with atc a
// thread reads its neighbours' old momentum while their threads write the new one. float4 loads and
// stores: rows are padded to 256 bytes (row_stride).
// row_ptr == nullptr is P = I (C-SGD and local SGD's local steps: the update alone).
// A shard of a sharded run passes its rows of P with columns >= m naming halo rows: copies of
// the foreign neighbours' W (and, with atc, G and momentum) in separate arrays of the same
// stride. The arithmetic per entry is the same, so a sharded gossip is bit-identical.
// Every value written is checked for NaN/Inf on the way out (free in a bandwidth-bound pass):
// a NaN weight can leave the loss finite (a ReLU maps it to 0), so the loss alone misses it.
#include "device_array.cuh"
#include "gossamer/cuda.hpp"
#include "gossamer/cuda_plan.hpp"
#include "kernels.cuh"

namespace gossamer {

static __device__ __forceinline__ float4 axpy4(float a, float4 x, float4 y) {
  return make_float4(fmaf(a, x.x, y.x), fmaf(a, x.y, y.y), fmaf(a, x.z, y.z), fmaf(a, x.w, y.w));
}

static __device__ __forceinline__ bool finite4(float4 x) {
  return isfinite(x.x) && isfinite(x.y) && isfinite(x.z) && isfinite(x.w);
}

// The first step that wrote a non-finite value: every writer of a step writes the same value,
// so the race is benign (the kernels of later steps run after this one on the stream).
static __device__ __forceinline__ void note_nonfinite(long long* first, const DeviceLossState* s) {
  if (*first < 0) *first = s->step;
}

// u of worker j at column group c (4 floats), and its new momentum when write_buf.
static __device__ __forceinline__ float4 update_of(const float4* W, const float4* G,
                                                   const float4* buf, float4* buf_out, int64_t idx,
                                                   const GossipParams& p, DeviceLossState* state) {
  // wd = 0 skips the term, as the CPU backend does: 0 x a NaN weight would be NaN.
  const float4 v = p.wd == 0.f ? G[idx] : axpy4(p.wd, W[idx], G[idx]);
  if (p.mu == 0.f) return v;
  const float4 b = axpy4(p.mu, buf[idx], v);  // mu buf + v
  if (buf_out) {
    buf_out[idx] = b;
    if (state && !finite4(b)) note_nonfinite(&state->first_nonfinite_momentum, state);
  }
  return p.nesterov ? axpy4(p.mu, b, v) : b;
}

static __global__ void gossip_update_f32(const int* row_ptr, const int* col, const float* val,
                                         int m, const float4* W, const float4* G,
                                         const float4* buf, float4* buf_out, float4* W_out,
                                         const float4* halo_W, const float4* halo_G,
                                         const float4* halo_buf, int64_t groups_per_row,
                                         GossipParams p, DeviceLossState* state) {
  // Rows on grid.x (the fastest-varying block index): the blocks in flight at once work on
  // one column tile of many consecutive rows, so a neighbour row's tile, read by up to
  // deg + 1 rows, is still in L2 when the next reader comes (exponential graphs reach k + m/2).
  const int k = int(blockIdx.x);
  const int64_t c = int64_t(blockIdx.y) * blockDim.x + threadIdx.x;
  if (c >= groups_per_row) return;
  const int64_t own = int64_t(k) * groups_per_row + c;
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
  if (!row_ptr) {
    acc = axpy4(-p.lr, update_of(W, G, buf, buf_out, own, p, state), W[own]);
  } else if (p.atc) {
    // W' = P (W - lr U): every neighbour's update is needed; only the own buffer is written.
    for (int e = row_ptr[k]; e < row_ptr[k + 1]; ++e) {
      const bool far = col[e] >= m;  // a halo row (a sharded run's foreign neighbour)
      const int64_t idx = int64_t(far ? col[e] - m : col[e]) * groups_per_row + c;
      const float4 u = far ? update_of(halo_W, halo_G, halo_buf, nullptr, idx, p, state)
                           : update_of(W, G, buf, nullptr, idx, p, state);
      acc = axpy4(val[e], axpy4(-p.lr, u, far ? halo_W[idx] : W[idx]), acc);
    }
    if (p.mu != 0.f) update_of(W, G, buf, buf_out, own, p, state);
  } else {
    for (int e = row_ptr[k]; e < row_ptr[k + 1]; ++e) {
      const bool far = col[e] >= m;
      const int64_t idx = int64_t(far ? col[e] - m : col[e]) * groups_per_row + c;
      acc = axpy4(val[e], far ? halo_W[idx] : W[idx], acc);
    }
    acc = axpy4(-p.lr, update_of(W, G, buf, buf_out, own, p, state), acc);
  }
  W_out[own] = acc;
  if (state && !finite4(acc)) note_nonfinite(&state->first_nonfinite_weights, state);
}

void launch_gossip_update(const int* row_ptr, const int* col, const float* val, int m, int64_t ld,
                          const float* w, const float* g, const float* buf, float* buf_out,
                          float* w_out, const HaloRows& halo, const GossipParams& p,
                          DeviceLossState* state, cudaStream_t s) {
  const GossipGrid shape = gossip_grid(m, ld, kLinearBlock);
  if (shape.rows == 0 || shape.groups_per_row == 0) return;
  const dim3 grid(unsigned(shape.rows), unsigned(shape.tiles));
  const auto in = [](const float* a) { return reinterpret_cast<const float4*>(a); };
  gossip_update_f32<<<grid, kLinearBlock, 0, s>>>(
      row_ptr, col, val, m, in(w), in(g), in(buf), reinterpret_cast<float4*>(buf_out),
      reinterpret_cast<float4*>(w_out), in(halo.w), in(halo.g), in(halo.buf),
      shape.groups_per_row, p, state);
  CUDA_CHECK_LAUNCH();
}

void cuda_gossip_update(const Csr& mixing, int64_t ld, std::vector<float>& W,
                        const std::vector<float>& G, std::vector<float>& buf, double lr,
                        double momentum, double weight_decay, bool nesterov, bool atc) {
  const int m = mixing.n;
  if (ld % 64 != 0)
    throw runtime_error("cuda_gossip_update: rows must be padded to 256 bytes (ld % 64 == 0)");
  const size_t n = size_t(m) * size_t(ld);
  if (W.size() != n || G.size() != n || (momentum > 0 && buf.size() != n))
    throw runtime_error("cuda_gossip_update: W, G (and buf with momentum) must be m x ld");
  std::vector<float> val(mixing.val.begin(), mixing.val.end());
  DeviceArray<int> row_ptr(mixing.row_ptr), col(mixing.col);
  const std::vector<float> no_buf;
  DeviceArray<float> d_val(val), d_w(W), d_g(G), d_buf(momentum > 0 ? buf : no_buf),
      d_buf_out(momentum > 0 ? buf : no_buf), d_out(W);
  // Poison the outputs: an unwritten element reads NaN.
  d_out.poison();
  if (momentum > 0) d_buf_out.poison();
  const GossipParams p{float(lr), float(momentum), float(weight_decay), nesterov, atc};
  launch_gossip_update(row_ptr.get(), col.get(), d_val.get(), m, ld, d_w.get(), d_g.get(),
                       d_buf.get(), momentum > 0 ? d_buf_out.get() : nullptr, d_out.get(),
                       HaloRows{}, p, nullptr, nullptr);
  W = d_out.fetch();
  if (momentum > 0) buf = d_buf_out.fetch();
}

}  // namespace gossamer
