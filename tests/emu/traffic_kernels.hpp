// Kernels whose memory traffic is known in closed form, for the traffic report's tests
// (tests/test_emulated_traffic.cpp); written as CUDA in traffic_kernels.cu and built traced.
#pragma once
#include <cstdint>

namespace traffic_kernels {

// y[i] = x[i * stride + offset] for i < n: `threads` threads a grid-stride loop, 64 a block.
void gather(const float* x, float* y, int n, int stride, int offset, int threads);
// y[i] = x[i] + 1 for i < n, as float4: 16 bytes a lane.
void copy4(const float* x, float* y, int n);
// y[i] = x[0] for i < n: every lane of a warp reads the same float.
void broadcast(const float* x, float* y, int n);
// y[i] = max(x[i], 0) by gossamer's activate() (a switch, then a branch), i < n.
void relu(const float* x, float* y, int n);
// y[i] = 0 where i % 3 == 0, else x[i] (a third of the lanes load nothing), i < n.
void skip_thirds(const float* x, float* y, int n);
// y[i] += x[i], i < n: y read and written.
void accumulate(const float* x, float* y, int n);
// y[t * width + j] = t for j < width, t < rows: a thread writes its row's width floats in turn
// (the layout of a row-a-thread kernel: a warp's lanes width floats apart).
void rows_a_thread(float* y, int rows, int width);

}  // namespace traffic_kernels
