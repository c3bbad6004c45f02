// Entry points of the CUDA part that the host code and the tests call (built only where
// nvcc is found: GOSSAMER_HAVE_CUDA). The CUDA training backend (issue 4) grows here.
#pragma once
#include <cstdint>
#include <vector>

#include "gossamer/partition.hpp"

namespace gossamer {

// Every worker's minibatch indices at `step`, drawn on the GPU with the same Philox
// stream as the CPU backend (philox.hpp): m x batch training-set indices.
std::vector<int64_t> cuda_sample_minibatches(const Partition& partition, uint64_t seed, int64_t step, int batch);

}  // namespace gossamer
