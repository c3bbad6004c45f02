// The CUDA shards' transports (shard_transport.cuh).
#include <nccl.h>

#include <cstring>
#include <map>

#include "cuda_check.cuh"
#include "device_array.cuh"
#include "shard_transport.cuh"

#define NCCL_CHECK(expr)                                                              \
  GOSSAMER_CHECK_GEN("NCCL", ncclResult_t, ncclSuccess,                               \
                     [](ncclResult_t rc) { return std::string(ncclGetErrorString(rc)); }, expr)

namespace gossamer {
namespace {

// Where each global shard sits in `local` (-1: another process's).
std::map<int, size_t> local_index(const std::vector<ShardEnd>& local) {
  std::map<int, size_t> at;
  for (size_t i = 0; i < local.size(); ++i) at[local[i].shard] = i;
  return at;
}

const float* row_of(const ShardEnd& e, int a, int worker, int64_t ld) {
  return e.rows[a] + int64_t(worker - e.first) * ld;
}

class CopyTransport final : public ShardTransport {
 public:
  explicit CopyTransport(const std::vector<ShardEnd>& local) {
    for (const ShardEnd& e : local) {
      CUDA_CHECK(cudaSetDevice(e.device));
      cudaEvent_t ev = nullptr;
      CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
      m_events.push_back(ev);
    }
  }
  ~CopyTransport() override {
    for (cudaEvent_t ev : m_events) cudaEventDestroy(ev);
  }
  std::string name() const override { return "copy"; }

  void exchange(const std::vector<RowRun>& runs, const std::vector<ShardEnd>& local, int arrays,
                int64_t ld) override {
    barrier(local);  // every shard's rows are written before any copy reads them
    const std::map<int, size_t> at = local_index(local);
    for (const RowRun& r : runs) {
      const ShardEnd& from = local[at.at(r.from)];
      const ShardEnd& to = local[at.at(r.to)];
      const size_t bytes = size_t(r.count) * size_t(ld) * sizeof(float);
      CUDA_CHECK(cudaSetDevice(to.device));
      for (int a = 0; a < arrays; ++a)
        CUDA_CHECK(cudaMemcpyPeerAsync(to.halo[a] + r.slot * ld, to.device,
                                       row_of(from, a, r.worker, ld), from.device, bytes,
                                       to.stream));
      m_bytes += int64_t(bytes) * arrays;
    }
    barrier(local);  // no shard overwrites a source row before its copy is done
  }

  void all_reduce(const std::vector<ShardEnd>& local, const std::vector<double*>& bufs,
                  size_t n) override {
    m_host.assign(local.size(), std::vector<double>(n));
    for (size_t i = 0; i < local.size(); ++i) {
      CUDA_CHECK(cudaSetDevice(local[i].device));
      CUDA_CHECK(cudaMemcpyAsync(m_host[i].data(), bufs[i], n * sizeof(double),
                                 cudaMemcpyDeviceToHost, local[i].stream));
    }
    for (const ShardEnd& e : local) CUDA_CHECK(cudaStreamSynchronize(e.stream));
    std::vector<double>& total = m_host[0];  // shard order: ((s0 + s1) + s2) + ...
    for (size_t i = 1; i < local.size(); ++i)
      for (size_t j = 0; j < n; ++j) total[j] += m_host[i][j];
    for (size_t i = 0; i < local.size(); ++i) {
      CUDA_CHECK(cudaSetDevice(local[i].device));
      CUDA_CHECK(cudaMemcpyAsync(bufs[i], total.data(), n * sizeof(double),
                                 cudaMemcpyHostToDevice, local[i].stream));
    }
    for (const ShardEnd& e : local) CUDA_CHECK(cudaStreamSynchronize(e.stream));  // total lives
  }

  void all_reduce_host(const std::vector<ShardEnd>&, std::vector<double>&) override {}

 private:
  // Every stream waits for the work queued on every other so far.
  void barrier(const std::vector<ShardEnd>& local) {
    for (size_t i = 0; i < local.size(); ++i) {
      CUDA_CHECK(cudaSetDevice(local[i].device));
      CUDA_CHECK(cudaEventRecord(m_events[i], local[i].stream));
    }
    for (size_t i = 0; i < local.size(); ++i) {
      CUDA_CHECK(cudaSetDevice(local[i].device));
      for (size_t j = 0; j < local.size(); ++j)
        if (j != i) CUDA_CHECK(cudaStreamWaitEvent(local[i].stream, m_events[j], 0));
    }
  }

  std::vector<cudaEvent_t> m_events;
  std::vector<std::vector<double>> m_host;
};

class NcclTransport final : public ShardTransport {
 public:
  NcclTransport(const std::vector<ShardEnd>& local, int total_shards, const Processes& p)
      : m_world(p.world) {
    ncclUniqueId id;
    std::memset(&id, 0, sizeof id);
    if (p.world == 1) {
      NCCL_CHECK(ncclGetUniqueId(&id));
    } else {
      // One file a communicator: a run may make several (the equivalence tracker's companion
      // backends), in the same order on every rank; FILE, then FILE.1, FILE.2, ...
      static int made = 0;
      Processes q = p;
      if (made > 0) q.rendezvous += "." + std::to_string(made);
      ++made;
      std::string bytes;
      if (p.rank == 0) {
        NCCL_CHECK(ncclGetUniqueId(&id));
        bytes.assign(reinterpret_cast<const char*>(&id), sizeof id);
      }
      bytes = rendezvous(q, bytes);
      m_rendezvous = q;
      if (bytes.size() != sizeof id)
        throw runtime_error("rendezvous file " + q.rendezvous + ": holds " +
                            std::to_string(bytes.size()) + " bytes, NCCL's id has " +
                            std::to_string(sizeof id) + " (a file of another NCCL version?)");
      std::memcpy(&id, bytes.data(), sizeof id);
    }
    m_comms.resize(local.size(), nullptr);
    NCCL_CHECK(ncclGroupStart());
    for (size_t i = 0; i < local.size(); ++i) {
      CUDA_CHECK(cudaSetDevice(local[i].device));
      NCCL_CHECK(ncclCommInitRank(&m_comms[i], total_shards, id, local[i].shard));
    }
    NCCL_CHECK(ncclGroupEnd());
    remove_rendezvous(m_rendezvous);  // every rank has joined: the id is spent
  }
  ~NcclTransport() override {
    for (ncclComm_t c : m_comms)
      if (c) ncclCommDestroy(c);
  }
  std::string name() const override { return "nccl"; }

  void exchange(const std::vector<RowRun>& runs, const std::vector<ShardEnd>& local, int arrays,
                int64_t ld) override {
    const std::map<int, size_t> at = local_index(local);
    const size_t count_per_row = size_t(ld);
    NCCL_CHECK(ncclGroupStart());
    for (const RowRun& r : runs) {
      const auto from = at.find(r.from), to = at.find(r.to);
      const size_t n = size_t(r.count) * count_per_row;
      for (int a = 0; a < arrays; ++a) {
        if (from != at.end()) {
          const ShardEnd& e = local[from->second];
          NCCL_CHECK(ncclSend(row_of(e, a, r.worker, ld), n, ncclFloat, r.to,
                              m_comms[from->second], e.stream));
        }
        if (to != at.end()) {
          const ShardEnd& e = local[to->second];
          NCCL_CHECK(ncclRecv(e.halo[a] + r.slot * ld, n, ncclFloat, r.from, m_comms[to->second],
                              e.stream));
          m_bytes += int64_t(n * sizeof(float));
        }
      }
    }
    NCCL_CHECK(ncclGroupEnd());
  }

  void all_reduce(const std::vector<ShardEnd>& local, const std::vector<double*>& bufs,
                  size_t n) override {
    NCCL_CHECK(ncclGroupStart());
    for (size_t i = 0; i < local.size(); ++i)
      NCCL_CHECK(ncclAllReduce(bufs[i], bufs[i], n, ncclDouble, ncclSum, m_comms[i],
                               local[i].stream));
    NCCL_CHECK(ncclGroupEnd());
  }

  // Through the device: local shard 0 contributes v, the others zeros.
  void all_reduce_host(const std::vector<ShardEnd>& local, std::vector<double>& v) override {
    if (m_world == 1 || v.empty()) return;
    m_scratch.resize(local.size());
    std::vector<double*> bufs;
    for (size_t i = 0; i < local.size(); ++i) {
      CUDA_CHECK(cudaSetDevice(local[i].device));
      if (m_scratch[i].size() < v.size()) m_scratch[i] = DeviceArray<double>(v.size());
      if (i == 0)
        CUDA_CHECK(cudaMemcpyAsync(m_scratch[i].get(), v.data(), v.size() * sizeof(double),
                                   cudaMemcpyHostToDevice, local[i].stream));
      else
        CUDA_CHECK(cudaMemsetAsync(m_scratch[i].get(), 0, v.size() * sizeof(double),
                                   local[i].stream));
      bufs.push_back(m_scratch[i].get());
    }
    all_reduce(local, bufs, v.size());
    CUDA_CHECK(cudaSetDevice(local[0].device));
    CUDA_CHECK(cudaMemcpyAsync(v.data(), bufs[0], v.size() * sizeof(double),
                               cudaMemcpyDeviceToHost, local[0].stream));
    for (const ShardEnd& e : local) CUDA_CHECK(cudaStreamSynchronize(e.stream));
  }

 private:
  int m_world;
  Processes m_rendezvous;  // this communicator's rendezvous file (none with one process)
  std::vector<ncclComm_t> m_comms;
  std::vector<DeviceArray<double>> m_scratch;
};

}  // namespace

std::unique_ptr<ShardTransport> make_copy_transport(const std::vector<ShardEnd>& local) {
  return std::make_unique<CopyTransport>(local);
}

std::unique_ptr<ShardTransport> make_nccl_transport(const std::vector<ShardEnd>& local,
                                                    int total_shards, const Processes& processes) {
  return std::make_unique<NcclTransport>(local, total_shards, processes);
}

}  // namespace gossamer
