// The traffic report of the emulated CUDA runtime (tests/emu/traffic.hpp) on kernels whose
// requests and sectors are known in closed form (tests/emu/traffic_kernels.cu): coalesced,
// strided, misaligned, 16-byte, broadcast and row-a-thread accesses, grid-stride loops, a
// partial warp and stores the host compiler splits; the GEMM shapes the emulated cuBLAS lists;
// and, on gossamer's own kernels, a guard: the CNN step's element-wise kernels (one thread an
// element, by design) must stay coalesced.
#include <cublas_v2.h>
#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "../bench/workloads.hpp"
#include "emu/traffic.hpp"
#include "emu/traffic_kernels.hpp"
#include "gossamer/error.hpp"
#include "gossamer/simulation.hpp"
#include "gossamer/trainer.hpp"
#include "helpers.hpp"

using gossamer_emu::KernelTraffic;
using gossamer_emu::TrafficReport;

namespace {

// Device buffers (cudaMalloc: 256-byte aligned), freed at the end of the test.
struct Buffers {
  std::vector<float*> held;
  float* make(size_t floats) {
    float* p = nullptr;
    EXPECT_EQ(cudaMalloc(&p, floats * sizeof(float)), cudaSuccess);
    for (size_t i = 0; i < floats; ++i) p[i] = float(i);
    held.push_back(p);
    return p;
  }
  ~Buffers() {
    for (float* p : held) cudaFree(p);
  }
};

// The one kernel of a report.
const KernelTraffic& only(const TrafficReport& r) {
  EXPECT_EQ(r.kernels.size(), 1u);
  return r.kernels.at(0);
}

// The one kernel `launch` runs, traced.
KernelTraffic traced(const std::function<void()>& launch) {
  gossamer_emu::start_traffic();
  launch();
  return only(gossamer_emu::stop_traffic());
}

TEST(EmulatedTraffic, CoalescedFloatsAreFourSectorsARequest) {
  Buffers b;
  float *x = b.make(1024), *y = b.make(1024);
  gossamer_emu::start_traffic();
  traffic_kernels::gather(x, y, 1024, 1, 0, 1024);
  const TrafficReport r = gossamer_emu::stop_traffic();
  const KernelTraffic& k = only(r);
  EXPECT_EQ(k.kernel, "gather_f32");
  EXPECT_EQ(k.launches, 1u);
  EXPECT_EQ(k.threads, 1024u);
  // 1,024 floats: 32 warps, each one request of 128 bytes = 4 sectors, loads and stores alike.
  EXPECT_EQ(k.loads.requests, 32u);
  EXPECT_EQ(k.loads.sectors, 128u);
  EXPECT_EQ(k.loads.bytes, 4096u);
  EXPECT_DOUBLE_EQ(k.loads.efficiency(), 1.0);
  EXPECT_EQ(k.stores.requests, 32u);
  EXPECT_EQ(k.stores.sectors, 128u);
  EXPECT_EQ(k.read_sectors, 128u);
  EXPECT_EQ(k.written_sectors, 128u);
  for (int i = 0; i < 1024; ++i) ASSERT_EQ(y[i], float(i));  // the kernel ran
}

TEST(EmulatedTraffic, AGridStrideLoopsIterationsAreRequestsOfTheirOwn) {
  Buffers b;
  float *x = b.make(1024), *y = b.make(1024);
  const KernelTraffic k =
      traced([&] { traffic_kernels::gather(x, y, 1024, 1, 0, 128); });  // 4 warps, 8 turns each
  EXPECT_EQ(k.threads, 128u);
  EXPECT_EQ(k.loads.requests, 32u);
  EXPECT_EQ(k.loads.sectors, 128u);
  EXPECT_EQ(k.stores.sectors, 128u);
}

TEST(EmulatedTraffic, FloatsA128BytesApartAreASectorEach) {
  Buffers b;
  float *x = b.make(32 * 1024), *y = b.make(1024);
  const KernelTraffic k = traced([&] { traffic_kernels::gather(x, y, 1024, 32, 0, 1024); });
  EXPECT_EQ(k.loads.requests, 32u);
  EXPECT_EQ(k.loads.sectors, 32u * 32u);
  EXPECT_DOUBLE_EQ(k.loads.efficiency(), 1.0 / 8);
  EXPECT_EQ(k.read_sectors, 1024u);
  EXPECT_EQ(k.stores.sectors, 128u);  // the stores stay coalesced
}

TEST(EmulatedTraffic, AMisalignedWarpTouchesFiveSectors) {
  Buffers b;
  float *x = b.make(1025), *y = b.make(1024);
  const KernelTraffic k =
      traced([&] { traffic_kernels::gather(x, y, 1024, 1, 1, 1024); });  // bytes 4 .. 4099 of x
  EXPECT_EQ(k.loads.sectors, 32u * 5u);
  EXPECT_EQ(k.read_sectors, 129u);
}

TEST(EmulatedTraffic, SixteenBytesALaneAreSixteenSectorsARequest) {
  Buffers b;
  float *x = b.make(1024), *y = b.make(1024);
  const KernelTraffic k = traced([&] { traffic_kernels::copy4(x, y, 1024); });
  EXPECT_EQ(k.kernel, "copy4_f32");
  EXPECT_EQ(k.loads.requests, 8u);  // 256 lanes
  EXPECT_EQ(k.loads.sectors, 8u * 16u);
  EXPECT_EQ(k.loads.bytes, 4096u);
  EXPECT_EQ(k.stores.requests, 8u);
  EXPECT_EQ(k.stores.sectors, 8u * 16u);
  for (int i = 0; i < 1024; ++i) ASSERT_EQ(y[i], float(i + 1));
}

TEST(EmulatedTraffic, ABroadcastIsOneSectorARequest) {
  Buffers b;
  float *x = b.make(8), *y = b.make(1024);
  const KernelTraffic k = traced([&] { traffic_kernels::broadcast(x, y, 1024); });
  EXPECT_EQ(k.loads.requests, 32u);
  EXPECT_EQ(k.loads.sectors, 32u);
  EXPECT_DOUBLE_EQ(k.loads.efficiency(), 4.0);  // 128 bytes asked of one sector
  EXPECT_EQ(k.read_sectors, 1u);
}

TEST(EmulatedTraffic, AStoreTheHostCompilerSplitsIsStillOneRequestAWarp) {
  Buffers b;
  float *x = b.make(1024), *y = b.make(1024);
  for (int i = 0; i < 1024; ++i) x[i] = i % 2 ? float(i) : -float(i);
  gossamer_emu::start_traffic();
  traffic_kernels::relu(x, y, 1024);
  traffic_kernels::skip_thirds(x, y, 1024);
  const TrafficReport r = gossamer_emu::stop_traffic();
  ASSERT_EQ(r.kernels.size(), 2u);
  for (const KernelTraffic& k : r.kernels) {
    SCOPED_TRACE(k.kernel);
    EXPECT_EQ(k.stores.requests, 32u);
    EXPECT_EQ(k.stores.sectors, 128u);
    EXPECT_EQ(k.loads.requests, 32u);  // every warp has lanes that load
    EXPECT_EQ(k.loads.sectors, 128u);  // and they cover its four sectors
  }
  EXPECT_EQ(r.kernels[1].loads.bytes, 4u * (1024u - 342u));  // 342 multiples of 3 below 1,024
  EXPECT_EQ(y[3], 0.f);
  EXPECT_EQ(y[4], -4.f);
}

TEST(EmulatedTraffic, AReadModifyWriteCountsItsLoadAndItsStore) {
  Buffers b;
  float *x = b.make(1024), *y = b.make(1024);
  const KernelTraffic k = traced([&] { traffic_kernels::accumulate(x, y, 1024); });
  EXPECT_EQ(k.loads.requests, 64u);  // x and y
  EXPECT_EQ(k.loads.sectors, 256u);
  EXPECT_EQ(k.stores.requests, 32u);
  EXPECT_EQ(k.stores.sectors, 128u);
  EXPECT_EQ(k.read_sectors, 256u);
  EXPECT_EQ(k.written_sectors, 128u);
  EXPECT_EQ(y[7], 14.f);
}

TEST(EmulatedTraffic, ARowAThreadStoreIsUncoalesced) {
  // 64 threads write 28 floats each: lane t's j-th store at 112 t + 4 j bytes, a sector a lane.
  Buffers b;
  float* y = b.make(64 * 28);
  const KernelTraffic k = traced([&] { traffic_kernels::rows_a_thread(y, 64, 28); });
  EXPECT_EQ(k.loads.requests, 0u);
  EXPECT_EQ(k.stores.requests, 2u * 28u);
  EXPECT_EQ(k.stores.sectors, 2u * 28u * 32u);
  EXPECT_DOUBLE_EQ(k.stores.efficiency(), 1.0 / 8);
  EXPECT_EQ(k.written_sectors, 64u * 28u * 4u / 32u);  // every byte written once
  EXPECT_EQ(y[5 * 28 + 3], 5.0f);
}

TEST(EmulatedTraffic, APartialWarpIsOneRequest) {
  Buffers b;
  float *x = b.make(40), *y = b.make(40);
  const KernelTraffic k = traced([&] { traffic_kernels::gather(x, y, 40, 1, 0, 64); });
  EXPECT_EQ(k.loads.requests, 2u);      // lanes 0-31, lanes 32-39
  EXPECT_EQ(k.loads.sectors, 4u + 1u);  // the second request's 32 bytes are one sector
}

TEST(EmulatedTraffic, CountsOnlyWhileOnAndAddsUpLaunches) {
  Buffers b;
  float *x = b.make(1024), *y = b.make(1024);
  traffic_kernels::gather(x, y, 1024, 1, 0, 1024);  // not counted
  gossamer_emu::start_traffic();
  traffic_kernels::broadcast(x, y, 64);
  traffic_kernels::gather(x, y, 1024, 1, 0, 1024);
  traffic_kernels::gather(x, y, 1024, 1, 0, 1024);
  const TrafficReport r = gossamer_emu::stop_traffic();
  ASSERT_EQ(r.kernels.size(), 2u);
  EXPECT_EQ(r.kernels[0].kernel, "broadcast_f32");  // in the order first launched
  EXPECT_EQ(r.kernels[1].launches, 2u);
  EXPECT_EQ(r.kernels[1].loads.sectors, 256u);
  EXPECT_EQ(r.kernels[1].read_sectors, 256u);  // each launch's footprint, summed
  traffic_kernels::gather(x, y, 1024, 1, 0, 1024);
  EXPECT_TRUE(gossamer_emu::stop_traffic().kernels.empty());
}

TEST(EmulatedTraffic, ListsTheGemmShapesAndOperandBytes) {
  Buffers b;
  float *a = b.make(6 * 4), *x = b.make(4 * 5), *c = b.make(6 * 5);
  cublasHandle_t h;
  ASSERT_EQ(cublasCreate(&h), CUBLAS_STATUS_SUCCESS);
  const float one = 1, zero = 0;
  gossamer_emu::start_traffic();
  for (int i = 0; i < 3; ++i)
    ASSERT_EQ(cublasGemmStridedBatchedEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 3, 5, 4, &one, a, CUDA_R_32F,
                                         3, 12, x, CUDA_R_32F, 4, 0, &zero, c, CUDA_R_32F, 3, 15, 2,
                                         CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
              CUBLAS_STATUS_SUCCESS);
  const TrafficReport r = gossamer_emu::stop_traffic();
  EXPECT_TRUE(r.kernels.empty());
  ASSERT_EQ(r.gemms.size(), 1u);
  EXPECT_EQ(r.gemms[0].m, 3);
  EXPECT_EQ(r.gemms[0].n, 5);
  EXPECT_EQ(r.gemms[0].k, 4);
  EXPECT_EQ(r.gemms[0].batch, 2);
  EXPECT_EQ(r.gemms[0].calls, 3u);
  // A (3 x 4) a batch entry, B (4 x 5, batch stride 0) once, C (3 x 5) a batch entry, not read
  // (beta 0): three calls.
  EXPECT_EQ(r.gemms[0].bytes_read, 3u * (2 * 12 + 20) * 4);
  EXPECT_EQ(r.gemms[0].bytes_written, 3u * 2 * 15 * 4);
  // beta 1 reads C too.
  gossamer_emu::start_traffic();
  ASSERT_EQ(cublasGemmStridedBatchedEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 3, 5, 4, &one, a, CUDA_R_32F, 3,
                                       12, x, CUDA_R_32F, 4, 0, &one, c, CUDA_R_32F, 3, 15, 2,
                                       CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
            CUBLAS_STATUS_SUCCESS);
  const TrafficReport beta = gossamer_emu::stop_traffic();
  cublasDestroy(h);
  ASSERT_EQ(beta.gemms.size(), 1u);
  EXPECT_EQ(beta.gemms[0].bytes_read, (2 * 12 + 20 + 2 * 15) * 4u);
}

// Memsets and copies, as they run: the device side's sectors (a copy from the host writes only),
// a row a kind, the calls added up; a misaligned start touches one sector more; not while off.
TEST(EmulatedTraffic, ListsMemsetsAndCopiesByTheirDeviceBytes) {
  Buffers b;
  float *x = b.make(1000), *y = b.make(1000);
  std::vector<float> host(1000, 1.f);
  cudaMemsetAsync(x, 0, 4000, nullptr);  // not counted
  gossamer_emu::start_traffic();
  cudaMemsetAsync(x, 0, 4000, nullptr);
  cudaMemsetAsync(x + 1, 0, 128, nullptr);  // 4 bytes past a sector's start: 5 sectors
  cudaMemcpyAsync(y, x, 4000, cudaMemcpyDeviceToDevice, nullptr);
  cudaMemcpyAsync(y, host.data(), 4000, cudaMemcpyHostToDevice, nullptr);
  cudaStreamSynchronize(nullptr);
  const TrafficReport r = gossamer_emu::stop_traffic();
  EXPECT_TRUE(r.kernels.empty());
  std::map<std::string, KernelTraffic> by;
  for (const KernelTraffic& t : r.transfers) by[t.kernel] = t;
  ASSERT_EQ(by.size(), 2u);
  const KernelTraffic &set = by["cudaMemsetAsync"], &copy = by["cudaMemcpyAsync"];
  EXPECT_EQ(set.launches, 2u);
  EXPECT_EQ(set.written_sectors, 125u + 5u);  // 4,000 bytes: 125 sectors
  EXPECT_EQ(set.read_sectors, 0u);
  EXPECT_EQ(set.stores.requests, 32u + 2u);  // 128-byte requests
  EXPECT_EQ(copy.launches, 2u);
  EXPECT_EQ(copy.read_sectors, 125u);  // the host's side is not device memory
  EXPECT_EQ(copy.written_sectors, 2 * 125u);
  EXPECT_DOUBLE_EQ(copy.loads.efficiency(), 1.0);
}

// The bench's workload (c), the CNN quickstart's network, at 2 workers of 8 images on the emulated
// device, with every fused path on (so that every kernel of the step's paths runs; the default
// leaves the small convolutions off): one training step after the one that captures its graph. Every kernel that runs one
// thread an element of what it writes must store coalesced (the column kernels of f306d6f, a
// thread a row of outputs, stored one sector a lane: 1/8 of this); those that also read one
// element a thread must load so too. The rest are listed with why they are not held to it.
TEST(EmulatedTraffic, TheCnnStepsElementKernelsAreCoalesced) {
  nlohmann::json c = gossamer_bench::workload("c", "cuda");
  c["data"] = {{"dataset", "fashion-mnist"},
               {"path", gossamer::test_util::fashion_mnist_dir()},
               {"train_samples", 256},
               {"test_samples", 64}};
  c["workers"] = 2;
  c["optimizer"]["batch_size"] = 8;
  std::unique_ptr<gossamer::Simulation> sim;
  try {
    sim = gossamer::make_simulation(gossamer::load_config(c, {}, "workload c"));
  } catch (const gossamer::Error& e) {
    if (!gossamer::test_util::fashion_missing(e)) throw;
    GTEST_SKIP() << "Fashion-MNIST not loadable: set GOSSAMER_FASHION_MNIST";
  }
  gossamer_bench::use_cnn_paths(*sim, gossamer::CnnPaths{});
  gossamer::train_step(*sim->backend, sim->config, *sim->topology, 0, 1e-3);
  gossamer_emu::start_traffic();
  gossamer::train_step(*sim->backend, sim->config, *sim->topology, 1, 1e-3);
  const TrafficReport r = gossamer_emu::stop_traffic();
  std::map<std::string, KernelTraffic> by_name;
  for (const KernelTraffic& k : r.kernels) by_name[k.kernel] = k;
  // Stores and loads one element a thread.
  for (const char* name :
       {"im2col_f32", "col2im_add_f32", "act_forward_f32", "act_backward_add_f32", "add_f32",
        "load_image_f32<I>", "gossip_update_f32", "(small_conv_f32<false, false>)"}) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(by_name.count(name)) << "not launched: the step's kernels changed";
    EXPECT_GE(by_name[name].stores.efficiency(), 0.95);
  }
  for (const char* name : {"act_forward_f32", "act_backward_add_f32", "add_f32",
                           "load_image_f32<I>", "gossip_update_f32"}) {
    SCOPED_TRACE(name);
    EXPECT_GE(by_name[name].loads.efficiency(), 0.95);
  }
  // Not held to it: the columns' gathers read windows (im2col, col2im: neighbouring lanes'
  // windows overlap; the classifier's columns are a transpose), the pools read and write 2 x 2
  // windows, the reductions (channel_sums, small_weight_grad, softmax_xent's rows) write a value
  // a block or a row, the GEMM-layout transposes are small. gossamer-traffic lists them all.
  EXPECT_EQ(r.gemms.size(), 11u);  // forward, weight and input gradients of the GEMM convolutions
  // Two workers' 16 channels are 32 blocks: the first layer's weight gradient splits its 6,272
  // columns six ways (small_grad_splits) and adds the partial sums in a second kernel.
  ASSERT_TRUE(by_name.count("small_weight_grad_finish_f32"));
  EXPECT_EQ(by_name["small_weight_grad_finish_f32"].launches, 1u);
}

}  // namespace
