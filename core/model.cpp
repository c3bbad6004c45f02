#include "gossamer/model.hpp"

#include <cmath>

#include "gossamer/philox.hpp"
#include "host_memory.hpp"

namespace gossamer {

ModelSpec ModelSpec::mlp(int input, const std::vector<int>& hidden, int classes,
                         Activation activation) {
  ModelSpec s;
  s.input = input;
  s.classes = classes;
  s.hidden = hidden;
  s.activation = activation;
  int in = input;
  std::vector<int> outs = hidden;
  outs.push_back(classes);
  for (int out : outs) {
    LayerSpec l;
    l.in = in;
    l.out = out;
    l.w_offset = s.dim;
    l.b_offset = s.dim + int64_t(in) * out;
    s.dim = l.b_offset + out;
    s.layers.push_back(l);
    in = out;
  }
  return s;
}

std::string ModelSpec::describe() const {
  std::string shape = std::to_string(input);
  for (int h : hidden) shape += "-" + std::to_string(h);
  shape += "-" + std::to_string(classes);
  const char* act = activation == Activation::Relu   ? "relu"
                    : activation == Activation::Tanh ? "tanh"
                                                     : "gelu";
  return shape + (hidden.empty() ? " (softmax regression)" : std::string(" ") + act) +
         ", d = " + std::to_string(dim);
}

int64_t row_stride(int64_t dim, int scalar_bytes) {
  const int64_t per_line = 256 / scalar_bytes;
  return (dim + per_line - 1) / per_line * per_line;
}

std::vector<double> init_weights(const ModelSpec& model, const ModelConfig& config, int workers,
                                 uint64_t seed) {
  check_host_memory(double(workers) * double(model.dim) * sizeof(double),
                    "the initial weights (" + std::to_string(workers) + " x " +
                        std::to_string(model.dim) + " doubles)",
                    "workers or the model size");
  std::vector<double> w(size_t(workers) * model.dim, 0.0);
  if (config.init == "zeros") return w;
  for (int k = 0; k < workers; ++k) {
    const uint32_t stream = config.same_init ? 0 : uint32_t(k);
    double* row = w.data() + size_t(k) * model.dim;
    for (const auto& l : model.layers)
      for (int64_t i = l.w_offset; i < l.b_offset; ++i)
        row[i] = initial_weight(config.init == "kaiming", l.in, l.out, seed, stream, uint64_t(i));
  }
  return w;
}

}  // namespace gossamer
