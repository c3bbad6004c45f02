// Entry points of the CUDA part that the host code and the tests call (built only where
// nvcc is found: GOSSAMER_HAVE_CUDA). The CUDA training backend (issue 4) grows here.
#pragma once
#include <cstdint>
#include <vector>

#include "gossamer/partition.hpp"
#include "gossamer/topology.hpp"

namespace gossamer {

// Every worker's minibatch indices at `step`, drawn on the GPU with the same Philox
// stream as the CPU backend (philox.hpp): m x batch training-set indices.
std::vector<int64_t> cuda_sample_minibatches(const Partition& partition, uint64_t seed,
                                             int64_t step, int batch);

// One fused gossip + update step on the GPU over host arrays (m x ld floats, ld a multiple
// of 64): W <- P W - lr U (or P (W - lr U) with atc), buf <- mu buf + g + wd w. For the
// agreement tests; the CUDA backend will keep the arrays on the device.
void cuda_gossip_update(const Csr& mixing, int64_t ld, std::vector<float>& W,
                        const std::vector<float>& G, std::vector<float>& buf, double lr,
                        double momentum, double weight_decay, bool nesterov, bool atc);

// Softmax cross-entropy of rows x classes logits on the GPU, in place: loss per row, whether
// the top class is right, and the logits replaced by (softmax - onehot) * scale.
void cuda_softmax_xent(std::vector<float>& logits, const std::vector<int32_t>& labels, int classes,
                       float scale, std::vector<float>& loss, std::vector<unsigned char>& correct);

}  // namespace gossamer
