// The traffic report's test kernels (traffic_kernels.hpp).
#include "traffic_kernels.hpp"

#include "gossamer/activations.hpp"

namespace traffic_kernels {

namespace {

__global__ void gather_f32(const float* x, float* y, int n, int stride, int offset) {
  for (int i = int(blockIdx.x * blockDim.x + threadIdx.x); i < n; i += int(gridDim.x * blockDim.x))
    y[i] = x[int64_t(i) * stride + offset];
}

// A float4 taken apart and built again, as the gossip's arithmetic does: on a GPU still one
// 16-byte load and one 16-byte store a lane.
__global__ void copy4_f32(const float4* x, float4* y, int n4) {
  const int i = int(blockIdx.x * blockDim.x + threadIdx.x);
  if (i >= n4) return;
  const float4 v = x[i];
  y[i] = make_float4(v.x + 1.f, v.y + 1.f, v.z + 1.f, v.w + 1.f);
}

__global__ void broadcast_f32(const float* x, float* y, int n) {
  const int i = int(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) y[i] = x[0];
}

__global__ void rows_a_thread_f32(float* y, int rows, int width) {
  const int t = int(blockIdx.x * blockDim.x + threadIdx.x);
  if (t >= rows) return;
  for (int j = 0; j < width; ++j) y[int64_t(t) * width + j] = float(t);
}

// One store a lane, on one line: a GPU issues it once a warp, however the host compiler splits it
// (the activation's switch and ReLU's branch; the lanes on the padding making no load first).
__global__ void activate_f32(const float* x, float* y, int n, gossamer::Activation act) {
  const int i = int(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) y[i] = gossamer::activate(act, x[i]);
}

__global__ void skip_thirds_f32(const float* x, float* y, int n) {
  const int i = int(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) y[i] = i % 3 == 0 ? 0.f : x[i];
}

__global__ void accumulate_f32(const float* x, float* y, int n) {
  const int i = int(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) y[i] += x[i];
}

constexpr int kBlock = 64;

}  // namespace

void gather(const float* x, float* y, int n, int stride, int offset, int threads) {
  gather_f32<<<(threads + kBlock - 1) / kBlock, kBlock>>>(x, y, n, stride, offset);
}

void copy4(const float* x, float* y, int n) {
  copy4_f32<<<(n / 4 + kBlock - 1) / kBlock, kBlock>>>(reinterpret_cast<const float4*>(x),
                                                      reinterpret_cast<float4*>(y), n / 4);
}

void broadcast(const float* x, float* y, int n) {
  broadcast_f32<<<(n + kBlock - 1) / kBlock, kBlock>>>(x, y, n);
}

void relu(const float* x, float* y, int n) {
  activate_f32<<<(n + kBlock - 1) / kBlock, kBlock>>>(x, y, n, gossamer::Activation::Relu);
}

void skip_thirds(const float* x, float* y, int n) {
  skip_thirds_f32<<<(n + kBlock - 1) / kBlock, kBlock>>>(x, y, n);
}

void accumulate(const float* x, float* y, int n) {
  accumulate_f32<<<(n + kBlock - 1) / kBlock, kBlock>>>(x, y, n);
}

void rows_a_thread(float* y, int rows, int width) {
  rows_a_thread_f32<<<(rows + kBlock - 1) / kBlock, kBlock>>>(y, rows, width);
}

}  // namespace traffic_kernels
