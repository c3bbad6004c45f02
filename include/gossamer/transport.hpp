// The transport seam of a sharded run (docs/ARCHITECTURE.md, "Shards"): W[m][d]'s rows split
// into contiguous blocks, one per shard; each step a shard needs copies of the foreign rows its
// rows of the mixing matrix read (its halo), and reductions over all workers run across shards.
// One small interface, three transports: in-process between CPU shards (memory copies; this
// build), in-process between shards on one GPU (device copies) and NCCL between GPUs or
// processes (ncclSend/ncclRecv in one group, all-reduce).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "gossamer/backend.hpp"
#include "gossamer/topology.hpp"

namespace gossamer {

// Contiguous, balanced row blocks: shard s holds workers [first(s), first(s + 1)); the first
// m mod S shards hold one worker more.
struct ShardLayout {
  ShardLayout(int workers, int shards);
  int shards() const { return int(m_first.size()) - 1; }
  int first(int s) const { return m_first[size_t(s)]; }
  int count(int s) const { return m_first[size_t(s) + 1] - m_first[size_t(s)]; }
  int owner(int worker) const;  // the shard holding a worker

 private:
  std::vector<int> m_first;
};

// One row a shard reads from another: worker `worker`'s row of W, owned by shard `from`,
// copied into slot `slot` of shard `to`'s halo.
struct RowCopy {
  int from = 0, to = 0;
  int worker = 0;
  int64_t slot = 0;
};

// A shard's part of one step's mixing: its rows of P with columns renumbered (local workers
// first, then halo slots), and the halo's rows.
struct ShardMixing {
  Csr local;                 // count(s) rows; column c < count(s): local worker first(s) + c;
                             // c >= count(s): halo slot c - count(s)
  std::vector<int> halo;     // global worker of each halo slot, ascending
};

// Consecutive copies between the same two shards (workers w, w+1, ... into slots s, s+1, ...) as
// one run: rows are contiguous in W and in the halo, so a run is one copy or one message.
struct RowRun {
  int from = 0, to = 0;
  int worker = 0;
  int64_t slot = 0;
  int64_t count = 0;
};
std::vector<RowRun> row_runs(const std::vector<RowCopy>& copies);

// Every shard's part of P (rows in order, columns renumbered) and the copies that fill the halos.
// A shard that reads more than half of the foreign rows gets all of them (an all-gather: one
// run from each other shard rather than many single rows).
struct HaloPlan {
  std::vector<ShardMixing> shards;
  std::vector<RowCopy> copies;
  int64_t rows_exchanged() const { return int64_t(copies.size()); }
};
HaloPlan plan_halo(const Csr& mixing, const ShardLayout& layout);

// The halo plan (and its row runs) of the last mixing matrix seen, made again only when the
// matrix changes: a static topology is planned once, a time-varying one at each change of phase.
class HaloPlanner {
 public:
  explicit HaloPlanner(const ShardLayout& layout) : m_layout(layout) {}
  const HaloPlan& plan(const Csr& mixing);
  const std::vector<RowRun>& runs() const { return m_runs; }

 private:
  ShardLayout m_layout;
  Csr m_for;  // the matrix m_plan was made for
  HaloPlan m_plan;
  std::vector<RowRun> m_runs;
};

class Transport {
 public:
  virtual ~Transport() = default;
  virtual std::string name() const = 0;
  // Every copy of the plan: worker's row of W from its owner into the reader's halo slot.
  virtual void exchange(const std::vector<RowCopy>& copies) = 0;
  // acc (n doubles, zero on entry) = the sum over shards of add(shard, acc), in shard order:
  // in-process transports run add(0), add(1), ... on the one running sum, so a sum over workers
  // is the serial worker-order sum (bit-identical to one shard); NCCL sums per-rank partials with
  // an all-reduce (the same to rounding, not bit for bit).
  virtual void ordered_sum(std::vector<double>& acc,
                           const std::function<void(int shard, std::vector<double>& acc)>& add) = 0;
  // Row bytes moved by exchanges so far (the bench's bytes per step).
  int64_t bytes_exchanged() const { return m_bytes; }

 protected:
  int64_t m_bytes = 0;
};

// The rendezvous of a multi-process run through a file on a shared filesystem: rank 0 writes
// `payload` (NCCL's unique id) to `path` atomically (a temporary file renamed into place) and
// returns it; every other rank waits for the file, up to timeout_seconds, and returns what it
// holds. A rank that waits longer throws an error naming the path and the wait; a file that is
// not what rank 0 writes is an error naming it. Rank 0 removes the file when every rank has
// joined (remove_rendezvous), so a later run cannot read a stale id.
std::string rendezvous(const Processes& p, const std::string& payload);
void remove_rendezvous(const Processes& p);

}  // namespace gossamer
