// The split of the training set over workers: worker k owns indices[offsets[s] .. offsets[s+1])
// of the training set, s = shard(k): k, or 0 for every worker of a `shared` partition (one
// shard, the whole training set, so any number of workers; each draws its own stream).
#pragma once
#include <cstdint>
#include <vector>

#include "gossamer/config.hpp"
#include "gossamer/dataset.hpp"

namespace gossamer {

struct Partition {
  std::vector<int64_t> offsets;  // m + 1, or 2 when shared
  std::vector<int64_t> indices;
  bool shared = false;
  int worker_count = 0;
  int workers() const { return worker_count; }
  int shard(int k) const { return shared ? 0 : k; }
  int64_t shard_start(int k) const { return offsets[size_t(shard(k))]; }
  int64_t shard_size(int k) const { return offsets[size_t(shard(k)) + 1] - shard_start(k); }
};

// iid: a random permutation cut into m near-equal parts.
// dirichlet: for each class c, proportions p_c ~ Dir(alpha 1_m) over workers; class c's
//   samples are dealt out in those proportions (Hsu et al. 2019).
// shards: samples sorted by label, cut into m * k shards, k random shards per worker
//   (McMahan et al. 2017), so each worker sees at most k classes.
// shared: every worker samples the whole training set (with its own stream): for more workers
//   than samples.
// Every worker gets at least one sample, or the call fails saying why.
Partition make_partition(const PartitionConfig& config, const Dataset& train, int workers,
                         uint64_t seed);

}  // namespace gossamer
