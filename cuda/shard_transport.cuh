// The transports between the CUDA backend's shards (transport.hpp's seam, on device memory):
// device copies between shards of one process (one GPU or several), and NCCL between GPUs and
// processes (ncclSend/ncclRecv in one group; all-reduce). The sharded backend
// (sharded_backend.cu) uses only this interface.
#pragma once
#include <cuda_runtime.h>

#include <memory>
#include <string>
#include <vector>

#include "gossamer/transport.hpp"

namespace gossamer {

// One shard of this process, as the transport sees it: its GPU, stream and rows (ld floats a
// row): W, G and momentum (an exchange reads `arrays` of them), and the halo arrays it fills.
struct ShardEnd {
  int shard = 0;  // the global shard id
  int device = 0;
  cudaStream_t stream = nullptr;
  int first = 0;  // the global worker id of its row 0
  const float* rows[3] = {nullptr, nullptr, nullptr};
  float* halo[3] = {nullptr, nullptr, nullptr};
};

class ShardTransport {
 public:
  virtual ~ShardTransport() = default;
  virtual std::string name() const = 0;
  // For each run whose shards are on this process: rows [worker, worker + count) of the first
  // `arrays` arrays (W; with atc also G and momentum) of shard `from` into halo slots
  // [slot, slot + count) of shard `to`. Ordered on the streams: after the work queued so far, and
  // before the work queued next, on both ends.
  virtual void exchange(const std::vector<RowRun>& runs, const std::vector<ShardEnd>& local,
                        int arrays, int64_t ld) = 0;
  // bufs[i]: n doubles on local shard i's device; each becomes the sum over every shard.
  virtual void all_reduce(const std::vector<ShardEnd>& local, const std::vector<double*>& bufs,
                          size_t n) = 0;
  // Host doubles summed over the processes (one process: unchanged).
  virtual void all_reduce_host(const std::vector<ShardEnd>& local, std::vector<double>& v) = 0;
  int64_t bytes_exchanged() const { return m_bytes; }

 protected:
  int64_t m_bytes = 0;
};

// Device copies (cudaMemcpyPeerAsync) between the shards of one process, ordered by events; the
// all-reduce sums the shards' buffers on the host in shard order (deterministic).
std::unique_ptr<ShardTransport> make_copy_transport(const std::vector<ShardEnd>& local);

// NCCL: one communicator rank per shard (total_shards in all; this process holds `local`),
// initialized from a unique id made here (one process) or passed through the rendezvous file
// (several processes).
std::unique_ptr<ShardTransport> make_nccl_transport(const std::vector<ShardEnd>& local,
                                                    int total_shards, const Processes& processes);

}  // namespace gossamer
