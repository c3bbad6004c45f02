#include "gossamer/model.hpp"

#include <cmath>

#include "gossamer/error.hpp"
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

namespace {

// Appends a convolution's parameters to the model (its LayerSpec for the initialization).
void add_weights(ModelSpec& s, ConvShape& c) {
  LayerSpec l;
  l.in = c.cin * c.kh * c.kw;
  l.out = c.cout;
  l.w_offset = s.dim;
  l.b_offset = s.dim + int64_t(l.in) * l.out;
  s.dim = l.b_offset + l.out;
  s.layers.push_back(l);
  c.w_offset = l.w_offset;
  c.b_offset = l.b_offset;
}

ConvShape conv_shape(int cin, int h, int w, int cout, int k, int stride) {
  ConvShape c;
  c.cin = cin;
  c.cout = cout;
  c.kh = c.kw = k;
  c.stride = stride;
  c.pad = k / 2;
  c.in_h = h;
  c.in_w = w;
  c.out_h = (h + 2 * c.pad - k) / stride + 1;
  c.out_w = (w + 2 * c.pad - k) / stride + 1;
  return c;
}

}  // namespace

ModelSpec ModelSpec::cnn(int channels, int height, int width,
                         const std::vector<CnnLayerConfig>& layers, int classes,
                         Activation activation) {
  ModelSpec s;
  s.kind = ModelKind::Cnn;
  s.input = channels * height * width;
  s.classes = classes;
  s.activation = activation;
  s.image_c = channels;
  s.image_h = height;
  s.image_w = width;
  int c = channels, h = height, w = width;
  const auto push = [&](CnnNode n) {
    n.input = int(s.nodes.size()) - 1;
    c = n.c;
    h = n.h;
    w = n.w;
    s.nodes.push_back(n);
  };
  const auto conv = [&](int cout, int k, int stride) {
    CnnNode n;
    n.op = CnnNode::Op::Conv;
    n.conv = conv_shape(c, h, w, cout, k, stride);
    add_weights(s, n.conv);
    n.c = cout, n.h = n.conv.out_h, n.w = n.conv.out_w;
    push(n);
  };
  const auto simple = [&](CnnNode::Op op, int nc, int nh, int nw) {
    CnnNode n;
    n.op = op;
    n.c = nc, n.h = nh, n.w = nw;
    push(n);
  };
  const auto linear = [&](int out) {
    CnnNode n;
    n.op = CnnNode::Op::Conv;
    n.conv = conv_shape(c, h, w, out, 1, 1);
    n.conv.kh = h, n.conv.kw = w, n.conv.pad = 0, n.conv.out_h = n.conv.out_w = 1;
    add_weights(s, n.conv);
    n.c = out, n.h = n.w = 1;
    push(n);
  };
  for (size_t i = 0; i < layers.size(); ++i) {
    const CnnLayerConfig& l = layers[i];
    const std::string at = "model.layers[" + std::to_string(i) + "] (" + l.type + ")";
    if ((l.type == "maxpool" || l.type == "avgpool") && (h < 2 || w < 2))
      throw config_error(at + ": the input is " + std::to_string(h) + " x " + std::to_string(w) +
                         " here; a 2 x 2 pool needs at least 2 x 2");
    if (l.type == "conv") {
      conv(l.channels, l.kernel, l.stride);
    } else if (l.type == "act") {
      simple(CnnNode::Op::Act, c, h, w);
    } else if (l.type == "maxpool" || l.type == "avgpool") {
      simple(l.type == "maxpool" ? CnnNode::Op::MaxPool : CnnNode::Op::AvgPool, c, h / 2, w / 2);
    } else if (l.type == "groupnorm") {
      if (c % l.groups != 0)
        throw config_error(at + ": groups: " + std::to_string(l.groups) + " does not divide the " +
                           std::to_string(c) + " channels here");
      CnnNode n;
      n.op = CnnNode::Op::GroupNorm;
      n.groups = l.groups;
      n.conv.b_offset = s.dim;  // scales - 1 and shifts: both start at 0 (the init's biases)
      s.dim += 2 * int64_t(c);
      n.c = c, n.h = h, n.w = w;
      push(n);
    } else if (l.type == "gap") {
      simple(CnnNode::Op::Gap, c, 1, 1);
    } else if (l.type == "linear") {
      linear(l.channels);
    } else if (l.type == "residual") {
      const int block_in = int(s.nodes.size()) - 1, cin = c, hin = h, win = w;
      conv(l.channels, 3, l.stride);
      simple(CnnNode::Op::Act, c, h, w);
      conv(l.channels, 3, 1);
      CnnNode add;
      add.op = CnnNode::Op::Add;
      add.other = block_in;
      add.conv = conv_shape(cin, hin, win, l.channels, 1, l.stride);
      if (cin != l.channels || l.stride != 1) add_weights(s, add.conv);  // a 1x1 shortcut
      add.c = c, add.h = h, add.w = w;
      push(add);
      simple(CnnNode::Op::Act, c, h, w);
    }
  }
  linear(classes);
  return s;
}

ModelSpec make_model(const ModelConfig& config, int features, int classes, int channels,
                     int height, int width) {
  if (config.kind != "cnn") return ModelSpec::mlp(features, config.hidden, classes, config.activation);
  if (height <= 0 || width <= 0 || channels * height * width != features)
    throw config_error("model.kind: \"cnn\" needs image data (idx, mnist, fashion-mnist, cifar10), "
                       "whose samples have a shape; this data set's samples are " +
                       std::to_string(features) + " features without one");
  return ModelSpec::cnn(channels, height, width, config.layers, classes, config.activation);
}

std::string ModelSpec::describe() const {
  if (kind == ModelKind::Cnn) {
    std::string out = "cnn " + std::to_string(image_c) + "x" + std::to_string(image_h) + "x" +
                      std::to_string(image_w);
    for (size_t i = 0; i + 1 < nodes.size(); ++i) {  // the last is the classifier: "-> classes"
      const CnnNode& n = nodes[i];
      const bool linear = n.conv.kh == n.conv.in_h && n.conv.kw == n.conv.in_w && n.conv.pad == 0;
      switch (n.op) {
        case CnnNode::Op::Conv:
          out += linear ? " linear" + std::to_string(n.c)
                        : " conv" + std::to_string(n.c) + (n.conv.stride > 1 ? "/2" : "");
          break;
        case CnnNode::Op::Act: out += " act"; break;
        case CnnNode::Op::MaxPool: out += " maxpool"; break;
        case CnnNode::Op::AvgPool: out += " avgpool"; break;
        case CnnNode::Op::Gap: out += " gap"; break;
        case CnnNode::Op::GroupNorm: out += " gn" + std::to_string(n.groups); break;
        case CnnNode::Op::Add: out += " +res"; break;
      }
    }
    const char* act = activation == Activation::Relu ? "relu" : activation == Activation::Tanh ? "tanh" : "gelu";
    return out + " -> " + std::to_string(classes) + " " + act + ", d = " + std::to_string(dim);
  }
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
