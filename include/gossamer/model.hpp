// The MLP's layout in one flat parameter vector per worker (a row of W[m][d]).
// Layer l stores its weight matrix (out x in, row-major) at w_offset, then its bias (out).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "gossamer/activations.hpp"
#include "gossamer/config.hpp"

namespace gossamer {

struct LayerSpec {
  int in = 0, out = 0;
  int64_t w_offset = 0, b_offset = 0;
};

struct ModelSpec {
  int input = 0, classes = 0;
  std::vector<int> hidden;
  Activation activation = Activation::Relu;
  std::vector<LayerSpec> layers;
  int64_t dim = 0;  // d, parameters per worker

  static ModelSpec mlp(int input, const std::vector<int>& hidden, int classes,
                       Activation activation);
  std::string describe() const;  // "784-128-10 relu, d = 101770"
};

// Row stride of W[m][d] in elements: d rounded up so that every row starts on a
// 256-byte boundary (docs/ARCHITECTURE.md), for an element of `scalar_bytes` bytes.
int64_t row_stride(int64_t dim, int scalar_bytes);

// Initial weights of all workers, m x d row-major (no padding). Worker k draws from the
// Philox stream (seed, Init, k) or, with same_init, every worker from stream 0.
std::vector<double> init_weights(const ModelSpec& model, const ModelConfig& config, int workers,
                                 uint64_t seed);

}  // namespace gossamer
