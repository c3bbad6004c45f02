// The split of the training set over workers: worker k owns
// indices[offsets[k] .. offsets[k+1]) of the training set.
#pragma once
#include <cstdint>
#include <vector>

#include "gossamer/config.hpp"
#include "gossamer/dataset.hpp"

namespace gossamer {

struct Partition {
  std::vector<int64_t> offsets;  // m + 1
  std::vector<int64_t> indices;
  int workers() const { return int(offsets.size()) - 1; }
  int64_t shard_size(int k) const { return offsets[k + 1] - offsets[k]; }
};

// iid: a random permutation cut into m near-equal parts.
// dirichlet: for each class c, proportions p_c ~ Dir(alpha 1_m) over workers; class c's
//   samples are dealt out in those proportions (Hsu et al. 2019).
// shards: samples sorted by label, cut into m * k shards, k random shards per worker
//   (McMahan et al. 2017), so each worker sees at most k classes.
// Every worker gets at least one sample, or the call fails saying why.
Partition make_partition(const PartitionConfig& config, const Dataset& train, int workers,
                         uint64_t seed);

}  // namespace gossamer
