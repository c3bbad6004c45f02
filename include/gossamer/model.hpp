// A model's layout in one flat parameter vector per worker (a row of W[m][d]). MLP layer l stores
// its weight matrix (out x in, row-major) at w_offset, then its bias (out); a CNN's convolutions
// store theirs the same way (ConvShape).
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

// A convolution over [cin][h][w] images: cout x (cin kh kw) weights at w_offset (row-major, the
// columns in (channel, row, column) order), then cout biases at b_offset; padding `pad` on every
// side. A linear layer over a flattened [c][h][w] input is the convolution with kh = h, kw = w,
// no padding (one output position).
struct ConvShape {
  int cin = 0, cout = 0, kh = 1, kw = 1, stride = 1, pad = 0;
  int in_h = 1, in_w = 1, out_h = 1, out_w = 1;
  int64_t w_offset = -1, b_offset = -1;  // -1: no weights (an identity shortcut)
};

// One node of a convolutional model: its output is the activation tensor of every sample,
// stored [channels][sample][row][column]. Nodes run in order; node 0 reads the image.
struct CnnNode {
  enum class Op { Conv, Act, MaxPool, AvgPool, Gap, Add, GroupNorm };
  Op op = Op::Conv;
  int input = -1;   // the node it reads; -1: the image
  int other = -1;   // Add: the node added to the input, through `conv` when that has weights
  ConvShape conv;   // Conv (a linear layer too), and an Add's shortcut; GroupNorm: its c scales
                    // (1 + g) then c shifts at conv.b_offset
  int groups = 0;   // GroupNorm
  int c = 0, h = 0, w = 0;  // the output's shape
};

enum class ModelKind { Mlp, Cnn };

struct ModelSpec {
  ModelKind kind = ModelKind::Mlp;
  int input = 0, classes = 0;
  std::vector<int> hidden;
  Activation activation = Activation::Relu;
  // Every weight matrix (the MLP's layers; a CNN's convolutions, shortcuts and linear layers as
  // in = fan-in, out = outputs), for the initialization.
  std::vector<LayerSpec> layers;
  int64_t dim = 0;  // d, parameters per worker
  // cnn: the image's shape and the nodes; the last is the classifier (classes x 1 x 1).
  int image_c = 0, image_h = 0, image_w = 0;
  std::vector<CnnNode> nodes;

  static ModelSpec mlp(int input, const std::vector<int>& hidden, int classes,
                       Activation activation);
  // Throws config_error naming the layer where a shape does not work (an image pooled below 1 x 1).
  static ModelSpec cnn(int channels, int height, int width, const std::vector<CnnLayerConfig>& layers,
                       int classes, Activation activation);
  std::string describe() const;  // "784-128-10 relu, d = 101770"
};

// The model of a config on a data set: model.kind's MLP or CNN (a config_error where a CNN is
// asked for data without an image shape).
ModelSpec make_model(const ModelConfig& config, int features, int classes, int channels,
                     int height, int width);

// Row stride of W[m][d] in elements: d rounded up so that every row starts on a
// 256-byte boundary (docs/ARCHITECTURE.md), for an element of `scalar_bytes` bytes.
int64_t row_stride(int64_t dim, int scalar_bytes);

// Initial weights of all workers, m x d row-major (no padding). Worker k draws from the
// Philox stream (seed, Init, k) or, with same_init, every worker from stream 0.
std::vector<double> init_weights(const ModelSpec& model, const ModelConfig& config, int workers,
                                 uint64_t seed);

}  // namespace gossamer
