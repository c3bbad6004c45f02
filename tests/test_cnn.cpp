// Convolutional models (model.kind "cnn", host/cnn.cpp) in float64 against independent truth:
// every layer kind's gradient against central differences of the loss, its Hessian-vector
// product against central differences of the gradient, an explicit Hessian's symmetry; the
// float32 passes against float64; the layer list's errors; training on Fashion-MNIST.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "cnn.hpp"
#include "gossamer/conv_index.hpp"
#include "gossamer/cuda_plan.hpp"
#include "gossamer/error.hpp"
#include "gossamer/philox.hpp"
#include "helpers.hpp"

using namespace gossamer;
using namespace gossamer::test_util;
using nlohmann::json;

namespace {

std::vector<double> normals(size_t n, uint32_t stream, double scale) {
  return random_normals(n, 29, stream, scale);
}

ConvShape column_shape(int cin, int h, int w, int k, int stride, int pad, bool whole) {
  ConvShape s;
  s.cin = cin, s.cout = 4, s.in_h = h, s.in_w = w, s.stride = stride, s.pad = pad;
  s.kh = whole ? h : k, s.kw = whole ? w : k;
  s.out_h = (h + 2 * s.pad - s.kh) / stride + 1, s.out_w = (w + 2 * s.pad - s.kw) / stride + 1;
  return s;
}

// Strides 1 and 2, paddings 0 to 2, 1 x 1, 3 x 3, 5 x 5 and a window of the whole input (a linear
// layer); all but the 5 x 5 have few enough columns for the small-convolution kernels.
const ConvShape kColumnShapes[] = {
    column_shape(2, 6, 5, 3, 1, 1, false), column_shape(2, 7, 7, 3, 2, 1, false),
    column_shape(3, 6, 5, 5, 2, 2, false), column_shape(2, 6, 6, 1, 2, 0, false),
    column_shape(2, 4, 3, 0, 1, 0, true)};

// The input index column entry (q, n) of model k reads (-1: padding), by the definition of im2col
// (R rows a model, the input [k][ch][r][h][w]).
int64_t direct_source(const ConvShape& s, int R, int k, int64_t q, int64_t n) {
  const int64_t ohw = int64_t(s.out_h) * s.out_w, ihw = int64_t(s.in_h) * s.in_w;
  const int ch = int(q / (s.kh * s.kw)), i = int(q / s.kw % s.kh), j = int(q % s.kw);
  const int r = int(n / ohw), oh = int(n % ohw / s.out_w), ow = int(n % s.out_w);
  const int ih = oh * s.stride + i - s.pad, iw = ow * s.stride + j - s.pad;
  if (ih < 0 || ih >= s.in_h || iw < 0 || iw >= s.in_w) return -1;
  return ((int64_t(k) * s.cin + ch) * R + r) * ihw + int64_t(ih) * s.in_w + iw;
}

// A model on 2-channel 6 x 5 images (odd and unequal sides), a batch of 3, 3 classes.
struct Problem {
  ModelSpec model;
  RowMat<double> x;
  std::vector<int32_t> y{0, 2, 1};
  std::vector<double> w;
  explicit Problem(const std::vector<CnnLayerConfig>& layers, Activation act = Activation::Tanh)
      : model(ModelSpec::cnn(2, 6, 5, layers, 3, act)) {
    const std::vector<double> xs = normals(3 * 60, 1, 1.0);
    x = Eigen::Map<const RowMat<double>>(xs.data(), 3, 60);
    w = normals(size_t(model.dim), 2, 0.4);
  }
  ConstRowMap<double> xmap() const { return ConstRowMap<double>(x.data(), x.rows(), x.cols()); }
  double loss(const std::vector<double>& p) {
    CnnWorkspace<double> ws;
    return cnn_loss(model, p.data(), xmap(), y.data(), ws).loss_sum / 3.0;
  }
  std::vector<double> grad(const std::vector<double>& p) {
    CnnWorkspace<double> ws;
    std::vector<double> g(size_t(model.dim), NAN);
    cnn_loss_grad(model, p.data(), xmap(), y.data(), g.data(), ws);
    return g;
  }
  std::vector<double> hvp(const std::vector<double>& v) {
    CnnWorkspace<double> ws;
    std::vector<double> out(size_t(model.dim), NAN);
    cnn_hvp(model, w.data(), v.data(), xmap(), y.data(), out.data(), ws);
    return out;
  }
};

// Every layer kind, alone before the classifier and in a whole network.
const std::vector<std::pair<std::string, std::vector<CnnLayerConfig>>> kNets = {
    {"conv 3x3", {layer("conv", 4)}},
    {"conv 5x5 stride 2, act", {layer("conv", 3, 5, 2), layer("act")}},
    {"conv 1x1", {layer("conv", 3, 1)}},
    {"act on the image", {layer("act"), layer("conv", 2)}},
    {"maxpool", {layer("conv", 3), layer("act"), layer("maxpool")}},
    {"avgpool", {layer("conv", 3), layer("avgpool")}},
    {"gap", {layer("conv", 4), layer("act"), layer("gap")}},
    {"linear", {layer("linear", 5), layer("act")}},
    {"residual, identity shortcut", {layer("conv", 3), layer("residual", 3)}},
    {"residual, 1x1 stride-2 shortcut", {layer("conv", 3), layer("residual", 4, 3, 2)}},
    {"residual on the image", {layer("residual", 2)}},
    {"groupnorm", {layer("conv", 4), groupnorm(2), layer("act")}},
    {"groupnorm on the image, one group", {groupnorm(1), layer("conv", 2)}},
    {"whole network",
     {layer("conv", 4), groupnorm(2), layer("act"), layer("maxpool"), layer("residual", 6, 3, 2),
      groupnorm(3), layer("gap"), layer("linear", 6), layer("act")}},
};

}  // namespace

TEST(CnnTest, GradientsMatchCentralDifferences) {
  for (const auto& [name, layers] : kNets) {
    SCOPED_TRACE(name);
    Problem p(layers);
    const std::vector<double> g = p.grad(p.w);
    std::vector<double> fd(g.size());
    const double h = 1e-5;
    for (size_t i = 0; i < g.size(); ++i) {
      std::vector<double> plus = p.w, minus = p.w;
      plus[i] += h;
      minus[i] -= h;
      fd[i] = (p.loss(plus) - p.loss(minus)) / (2 * h);
    }
    EXPECT_LT(rel_err(g, fd), 1e-7) << p.model.describe();
  }
}

TEST(CnnTest, HessianVectorProductsMatchCentralDifferencesOfTheGradient) {
  for (const auto& [name, layers] : kNets) {
    SCOPED_TRACE(name);
    Problem p(layers);
    const std::vector<double> v = normals(p.w.size(), 3, 1.0);
    const std::vector<double> hv = p.hvp(v);
    const double h = 1e-5;
    std::vector<double> plus = p.w, minus = p.w;
    for (size_t i = 0; i < v.size(); ++i) {
      plus[i] += h * v[i];
      minus[i] -= h * v[i];
    }
    const std::vector<double> gp = p.grad(plus), gm = p.grad(minus);
    std::vector<double> fd(v.size());
    for (size_t i = 0; i < v.size(); ++i) fd[i] = (gp[i] - gm[i]) / (2 * h);
    EXPECT_LT(rel_err(hv, fd), 1e-6) << p.model.describe();
  }
}

// The HVP of every unit vector is a column of the Hessian: it must be symmetric.
TEST(CnnTest, ExplicitHessianOfASmallNetworkIsSymmetric) {
  Problem p({layer("conv", 2), groupnorm(1), layer("act"), layer("maxpool"), layer("residual", 2),
             layer("gap")},
            Activation::Gelu);
  const size_t d = p.w.size();
  ASSERT_LT(d, 200u);
  std::vector<std::vector<double>> H(d);
  for (size_t j = 0; j < d; ++j) {
    std::vector<double> e(d, 0.0);
    e[j] = 1;
    H[j] = p.hvp(e);
  }
  double asym = 0, norm = 0;
  for (size_t i = 0; i < d; ++i)
    for (size_t j = 0; j < d; ++j) {
      asym = std::max(asym, std::abs(H[j][i] - H[i][j]));
      norm = std::max(norm, std::abs(H[j][i]));
    }
  EXPECT_GT(norm, 1e-3);
  EXPECT_LT(asym, 1e-12 * std::max(1.0, norm));
}

// ReLU networks: gradients are exact (piecewise linear), and float32 agrees with float64.
TEST(CnnTest, Float32PassesAgreeWithFloat64) {
  Problem p(kNets.back().second, Activation::Relu);
  const std::vector<double> g64 = p.grad(p.w);
  const std::vector<float> w32(p.w.begin(), p.w.end());
  const RowMat<float> x32 = p.x.cast<float>();
  CnnWorkspace<float> ws;
  std::vector<float> g32(w32.size());
  const BatchResult r = cnn_loss_grad(p.model, w32.data(), ConstRowMap<float>(x32.data(), 3, 60),
                                      p.y.data(), g32.data(), ws);
  EXPECT_NEAR(r.loss_sum / 3, p.loss(p.w), 1e-5);
  EXPECT_LT(rel_err(std::vector<double>(g32.begin(), g32.end()), g64), 1e-5);
  const RowMat<float>& logits =
      cnn_logits(p.model, w32.data(), ConstRowMap<float>(x32.data(), 3, 60), ws);
  EXPECT_EQ(logits.rows(), 3);
  EXPECT_EQ(logits.cols(), 3);
}

// The CPU passes' convolution (im2col, whose loops skip the padding by precomputed column ranges,
// and a GEMM) against a convolution written out from its definition, through the logits of a
// convolution and the classifier: every kernel size at strides 1 and 2, on images narrower than
// the kernel too (where a kernel column reads no input column at all).
TEST(CnnTest, TheCpuConvolutionIsTheDirectOne) {
  struct Case {
    int c, h, w, k, stride;
  };
  for (const Case& t :
       {Case{2, 6, 5, 3, 1}, Case{2, 6, 5, 3, 2}, Case{2, 6, 5, 1, 2}, Case{1, 7, 9, 5, 2},
        Case{1, 7, 9, 7, 1}, Case{3, 3, 2, 7, 1}, Case{2, 2, 3, 5, 2}}) {
    SCOPED_TRACE(testing::Message() << t.c << "x" << t.h << "x" << t.w << " image, " << t.k << "x"
                                    << t.k << " at stride " << t.stride);
    const int cout = 3, classes = 4, batch = 2;
    const ModelSpec m = ModelSpec::cnn(t.c, t.h, t.w, {layer("conv", cout, t.k, t.stride)}, classes,
                                       Activation::Relu);
    const ConvShape& s = m.nodes.front().conv;
    const ConvShape& fc = m.nodes.back().conv;
    const std::vector<double> w = normals(size_t(m.dim), 3, 0.5);
    const std::vector<double> xs = normals(size_t(batch) * t.c * t.h * t.w, 4, 1.0);
    const RowMat<double> x = Eigen::Map<const RowMat<double>>(xs.data(), batch, t.c * t.h * t.w);
    CnnWorkspace<double> ws;
    const RowMat<double> logits =
        cnn_logits(m, w.data(), ConstRowMap<double>(x.data(), batch, x.cols()), ws);
    for (int b = 0; b < batch; ++b) {
      // out[c][oh][ow] = b_c + sum over (ch, i, j) of w[c][ch][i][j] x[ch][oh s + i - p][ow s + j -
      // p].
      std::vector<double> out(size_t(cout) * s.out_h * s.out_w);
      for (int c = 0; c < cout; ++c)
        for (int oh = 0; oh < s.out_h; ++oh)
          for (int ow = 0; ow < s.out_w; ++ow) {
            double sum = w[size_t(s.b_offset + c)];
            for (int ch = 0; ch < t.c; ++ch)
              for (int i = 0; i < t.k; ++i)
                for (int j = 0; j < t.k; ++j) {
                  const int ih = oh * t.stride + i - t.k / 2, iw = ow * t.stride + j - t.k / 2;
                  if (ih >= 0 && ih < t.h && iw >= 0 && iw < t.w)
                    sum += w[size_t(s.w_offset + ((c * t.c + ch) * t.k + i) * t.k + j)] *
                           x(b, (ch * t.h + ih) * t.w + iw);
                }
            out[size_t((c * s.out_h + oh) * s.out_w + ow)] = sum;
          }
      for (int q = 0; q < classes; ++q) {
        double z = w[size_t(fc.b_offset + q)];
        for (size_t e = 0; e < out.size(); ++e)
          z += w[size_t(fc.w_offset) + q * out.size() + e] * out[e];
        EXPECT_NEAR(logits(b, q), z, 1e-12 * (1 + std::abs(z)))
            << "sample " << b << ", class " << q;
      }
    }
  }
}

TEST(CnnTest, ShapesAndParameterCounts) {
  // 2 x 6 x 5: conv 4 (2*9*4 + 4 = 76), maxpool -> 3 x 2, residual 5 stride 2 -> 2 x 1 with a
  // 1x1 shortcut (4*9*5+5 + 5*9*5+5 + 4*5+5 = 440), gap, classifier 5 -> 3 (18).
  const ModelSpec m = ModelSpec::cnn(
      2, 6, 5, {layer("conv", 4), layer("maxpool"), layer("residual", 5, 3, 2), layer("gap")}, 3,
      Activation::Relu);
  EXPECT_EQ(m.dim, 76 + 440 + 18);
  EXPECT_EQ(m.nodes[5].h, 2);
  EXPECT_EQ(m.nodes[5].w, 1);
  EXPECT_EQ(m.nodes[1].h, 3);
  EXPECT_EQ(m.nodes[1].w, 2);
  EXPECT_EQ(m.nodes.back().c, 3);
  EXPECT_EQ(m.layers.size(), 5u);  // conv, residual's two convs and its shortcut, classifier
  try {
    ModelSpec::cnn(1, 4, 4, {layer("conv", 6), groupnorm(4)}, 3, Activation::Relu);
    ADD_FAILURE() << "4 groups of 6 channels";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(
                  "model.layers[1] (groupnorm): groups: 4 does not divide the 6 channels"),
              std::string::npos)
        << e.what();
  }
  try {
    ModelSpec::cnn(1, 3, 3, {layer("maxpool"), layer("maxpool")}, 3, Activation::Relu);
    ADD_FAILURE() << "a 1 x 1 image was pooled";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Config);
    EXPECT_NE(std::string(e.what()).find("model.layers[1] (maxpool): the input is 1 x 1"),
              std::string::npos)
        << e.what();
  }
}

TEST(CnnTest, MalformedLayerListsNameTheLayerAndTheField) {
  const auto message = [](const json& layers) {
    return config_message({{"model", {{"kind", "cnn"}, {"layers", layers}}}});
  };
  const auto has = [&](const json& layers, const std::string& text) {
    const std::string m = message(layers);
    EXPECT_NE(m.find(text), std::string::npos) << layers.dump() << " -> " << m;
  };
  has(json::array({{{"type", "conv"}, {"channels", 8}},
                   {{"type", "conv"}, {"channels", 8}, {"kernel", 4}}}),
      "f.json: model.layers[1] (conv): kernel: expected an odd integer from 1 to 7");
  has(json::array({{{"type", "conv"}}}), "model.layers[0] (conv): channels: missing");
  has(json::array({{{"type", "conv"}, {"channels", "8"}}}),
      "model.layers[0] (conv): channels: expected an integer");
  has(json::array({{{"type", "residual"}, {"channels", 8}, {"stride", 3}}}),
      "model.layers[0] (residual): stride: expected 1 or 2");
  has(json::array({{{"type", "maxpool"}, {"size", 3}}}),
      "model.layers[0] (maxpool): size: not a field of this layer");
  has(json::array({{{"type", "dense"}}}), "model.layers[0]: type: expected one of conv");
  has(json::array({{{"type", "groupnorm"}}}), "model.layers[0] (groupnorm): groups: missing");
  has(json::array({"conv"}), "model.layers[0]: expected an object with a \"type\"");
  has(json::object(), "model.layers: expected a list");
  EXPECT_NE(message(json::array({{{"type", "conv"}, {"channels", 8}}})).find("(accepted)"),
            std::string::npos);
  // Layers without kind cnn, and a cnn on data without an image shape.
  try {
    load_config(tiny_config({{"model", {{"layers", json::array({{{"type", "gap"}}})}}}}), {},
                "f.json");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.kind is \"mlp\""), std::string::npos) << e.what();
  }
  EXPECT_THROW(make_sim({{"model", {{"kind", "cnn"}}}}, false), Error);
}

// The command line: exit 2, the layer and the field named, nothing written.
TEST(CnnTest, TheCliRefusesAMalformedLayerWithExitTwo) {
  const auto dir = fresh_temp_dir("cnncli");
  const std::string config = (dir / "c.json").string();
  std::ofstream(config) << tiny_config(
                               {{"model",
                                 {{"kind", "cnn"},
                                  {"layers", json::array({{{"type", "conv"}, {"channels", 0}}})}}}})
                               .dump();
  const Result r = run_cli("run " + config + " --out " + (dir / "r").string());
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find(
                "model.layers[0] (conv): channels: expected an integer from 1 to 4096, found 0"),
            std::string::npos)
      << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "r" / "metrics.jsonl"));
  // A list that parses but does not fit the images (the fifth 2 x 2 pool of a 28 x 28 image):
  // found when the data's shape is known, and still the file, the layer and exit 2.
  if (std::filesystem::exists("/usr/share/datasets/fashion-mnist")) {
    std::ofstream(config) << tiny_config({{"data", {{"dataset", "fashion-mnist"}}},
                                          {"model",
                                           {{"kind", "cnn"},
                                            {"layers", json::array({{{"type", "maxpool"}},
                                                                    {{"type", "maxpool"}},
                                                                    {{"type", "maxpool"}},
                                                                    {{"type", "maxpool"}},
                                                                    {{"type", "maxpool"}}})}}}})
                                 .dump();
    const Result pools = run_cli("run " + config + " --out " + (dir / "p").string());
    EXPECT_EQ(pools.code, 2) << pools.output;
    EXPECT_NE(pools.output.find("c.json: model.layers[4] (maxpool): the input is 1 x 1 here"),
              std::string::npos)
        << pools.output;
    EXPECT_FALSE(std::filesystem::exists(dir / "p"));
  }
  std::filesystem::remove_all(dir);
}

namespace {

const char* kFashion = "/usr/share/datasets/fashion-mnist";

std::string repo_file(const std::string& rel) {
  return std::string(GOSSAMER_SOURCE_DIR) + "/" + rel;
}

}  // namespace

// The CPU backend's HVP of a cnn (curvature subset in chunks, pairs in parallel) is the
// per-batch R-operator's over the same subset, and a cnn trains through the whole stack.
TEST(CnnTest, TheCpuBackendComputesCnnHvpsOverTheCurvatureSubset) {
  if (!std::filesystem::exists(kFashion))
    GTEST_SKIP() << kFashion << " not found: install Debian's dataset-fashion-mnist";
  json c = read_json_file(repo_file("configs/quickstart-cnn.json"), "config");
  c["workers"] = 2;
  c["data"]["train_samples"] = 600;
  c["data"]["test_samples"] = 100;
  c["curvature"] = {{"samples", 300}};
  c["precision"] = "float64";
  c["backend"] = "cpu";
  auto sim = make_simulation(load_config(c, {}, "quickstart-cnn"));
  Backend& b = *sim->backend;
  const int64_t d = b.dim();
  const std::vector<double> w = b.weights(), v = normals(size_t(d), 5, 1.0);
  const std::vector<double> point(w.begin(), w.begin() + d);
  const std::vector<double> hv = b.hvp(point, v);
  // The same product directly, on the subset's rows in one batch.
  RowMat<double> x(int64_t(sim->curvature_subset.size()), sim->model.input);
  std::vector<int32_t> y;
  for (size_t i = 0; i < sim->curvature_subset.size(); ++i) {
    const int64_t r = sim->curvature_subset[i];
    for (int f = 0; f < sim->model.input; ++f)
      x(int64_t(i), f) = sim->data.train.x[size_t(r * sim->model.input + f)];
    y.push_back(sim->data.train.y[size_t(r)]);
  }
  CnnWorkspace<double> ws;
  std::vector<double> direct(static_cast<size_t>(d));
  cnn_hvp(sim->model, point.data(), v.data(), ConstRowMap<double>(x.data(), x.rows(), x.cols()),
          y.data(), direct.data(), ws);
  EXPECT_LT(rel_err(hv, direct), 1e-10);
}

// The CNN quickstart's config, cut to 100 steps on 12,000 training and 1,000 test images: it
// learns (the full run, 1,500 steps, reaches 90 % in 2 min 17 s on the 2-core VM: README).
TEST(CnnTest, TheCnnQuickstartLearns) {
  if (!std::filesystem::exists(kFashion))
    GTEST_SKIP() << kFashion << " not found: install Debian's dataset-fashion-mnist";
  const auto dir = fresh_temp_dir("cnnquick");
  const Result r =
      run_cli("run " + repo_file("configs/quickstart-cnn.json") +
              " --set train.steps=100 --set train.eval_every=100 --set data.train_samples=12000"
              " --set data.test_samples=1000 --out " +
              (dir / "r").string());
  ASSERT_EQ(r.code, 0) << r.output;
  std::ifstream in(dir / "r" / "summary.json");
  const json s = json::parse(in);
  EXPECT_GT(s["final"]["test_acc"].get<double>(), 0.75) << s.dump();
  std::printf("cnn quickstart, 100 steps: test accuracy %.4f\n",
              s["final"]["test_acc"].get<double>());
  EXPECT_NE(r.output.find("cnn 1x28x28 conv16"), std::string::npos) << r.output;
  std::filesystem::remove_all(dir);
}

// `gossamer plan` shows a cnn's device-memory plan (it refused one before the CUDA backend had
// convolutions), its training activations the bytes cnn_workspace_bytes counts for 16 x 32 rows
// on the backend's default paths.
TEST(CnnTest, ThePlanCountsTheCnnsDeviceBuffers) {
  if (!std::filesystem::exists(kFashion))
    GTEST_SKIP() << kFashion << " not found: install Debian's dataset-fashion-mnist";
  const Result r = run_cli("plan " + repo_file("configs/quickstart-cnn.json"));
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("16 workers, cnn 1x28x28 conv16"), std::string::npos) << r.output;
  const ModelSpec model =
      ModelSpec::cnn(1, 28, 28,
                     {layer("conv", 16), layer("act"), layer("maxpool"),
                      layer("residual", 32, 3, 2), layer("linear", 32), layer("act")},
                     10, Activation::Relu);
  char line[96];
  std::snprintf(line, sizeof line, "%.2f GiB  training activations",
                double(cnn_workspace_bytes(model, 16 * 32, false, CnnPaths::defaults())) /
                    double(int64_t(1) << 30));
  EXPECT_NE(r.output.find(line), std::string::npos) << line << "\n" << r.output;
}

// The CUDA backward pass stores a node's gradient once (no zeroing) exactly where one node reads
// it and that node's backward writes all of it; activations run inside a neighbour's kernel
// exactly where cnn_fusions says they may.
TEST(CnnTest, TheCudaPassesStoreAndFuseWhereTheyMay) {
  // conv, act, maxpool (of 28 x 28), conv/2, act, conv, add (1x1 shortcut from the pool), act,
  // linear, act, classifier.
  const ModelSpec quick =
      ModelSpec::cnn(1, 28, 28,
                     {layer("conv", 16), layer("act"), layer("maxpool"),
                      layer("residual", 32, 3, 2), layer("linear", 32), layer("act")},
                     10, Activation::Relu);
  EXPECT_EQ(cnn_gradient_stored(quick), (std::vector<bool>{true, true, false, true, true, true,
                                                           true, true, true, true, false}));
  // conv, act (7 x 7: the pool's windows leave a row and a column), avgpool, groupnorm, conv,
  // act, conv, add (identity from the groupnorm), gap, classifier.
  const ModelSpec odd = ModelSpec::cnn(1, 7, 7,
                                       {layer("conv", 4), layer("act"), layer("avgpool"),
                                        groupnorm(2), layer("residual", 4, 3, 1), layer("gap")},
                                       3, Activation::Tanh);
  ASSERT_EQ(odd.nodes.size(), 11u);
  EXPECT_EQ(cnn_gradient_stored(odd), (std::vector<bool>{true, false, true, false, true, true, true,
                                                         true, true, true, false}));
  // The activations run inside a neighbour's kernel: the quickstart's first (after a convolution
  // of 9 columns, before a pool of 28 x 28), none in the odd network but the one after its first
  // convolution (its pool leaves a row out; its 4-channel convolutions have 36 columns).
  const std::vector<bool> none(11, false);
  std::vector<bool> first = none;
  first[1] = true;
  EXPECT_EQ(cnn_fusions(quick).act_in_conv, first);
  EXPECT_EQ(cnn_fusions(quick).act_in_pool, first);
  EXPECT_EQ(cnn_fusions(odd).act_in_conv, first);
  EXPECT_EQ(cnn_fusions(odd).act_in_pool, none);
  // An activation on the image: no convolution before it, no node's gradient after it.
  const ModelSpec image =
      ModelSpec::cnn(1, 8, 8, {layer("act"), layer("maxpool"), layer("conv", 2, 1), layer("act")},
                     3, Activation::Tanh);
  EXPECT_EQ(cnn_fusions(image).act_in_conv, (std::vector<bool>{false, false, false, true, false}));
  EXPECT_EQ(cnn_fusions(image).act_in_pool, (std::vector<bool>(5, false)));
  // The quickstart's first activation, in both its convolution and its pool, takes its
  // derivatives from its output with ReLU and tanh, not with GELU; the odd network's is in no
  // pool.
  EXPECT_EQ(cnn_fusions(quick).act_from_output, first);
  ModelSpec quick_tanh = quick, quick_gelu = quick;
  quick_tanh.activation = Activation::Tanh;
  quick_gelu.activation = Activation::Gelu;
  EXPECT_EQ(cnn_fusions(quick_tanh).act_from_output, first);
  EXPECT_EQ(cnn_fusions(quick_gelu).act_from_output, none);
  EXPECT_EQ(cnn_fusions(odd).act_from_output, none);
  // The quickstart's first convolution (on the image) takes its weight gradient through the max
  // pool (node 2) in passes without R; none with GELU, none on the general path.
  std::vector<int> through(11, -1);
  through[0] = 2;
  EXPECT_EQ(cnn_fusions(quick).weight_grad_through_pool, through);
  EXPECT_EQ(cnn_fusions(quick_tanh).weight_grad_through_pool, through);
  EXPECT_EQ(cnn_fusions(quick_gelu).weight_grad_through_pool, std::vector<int>(11, -1));
  const CnnPaths general = CnnPaths::general();
  EXPECT_EQ(cnn_fusions(quick, general).weight_grad_through_pool, std::vector<int>(11, -1));
  EXPECT_EQ(cnn_fusions(quick, general).act_in_pool, none);
  // Each switch alone (CnnPaths): without small_convs the first convolution is a GEMM's, so its
  // activation runs in the pool's backward only (and its derivatives from its input); without
  // grad_through_pool the rest stays; without fused_acts nothing; stored_grads and kept_columns
  // change no fusion.
  CnnPaths no_small, no_through, no_acts, no_stored, no_kept;
  no_small.small_convs = false, no_through.grad_through_pool = false, no_acts.fused_acts = false;
  no_stored.stored_grads = false, no_kept.kept_columns = false;
  EXPECT_EQ(cnn_fusions(quick, no_small).act_in_conv, none);
  EXPECT_EQ(cnn_fusions(quick, no_small).act_in_pool, first);
  EXPECT_EQ(cnn_fusions(quick, no_small).act_from_output, none);
  EXPECT_EQ(cnn_fusions(quick, no_small).weight_grad_through_pool, std::vector<int>(11, -1));
  EXPECT_EQ(cnn_fusions(quick, no_through).act_from_output, first);
  EXPECT_EQ(cnn_fusions(quick, no_through).weight_grad_through_pool, std::vector<int>(11, -1));
  EXPECT_EQ(cnn_fusions(quick, no_acts).act_in_conv, none);
  EXPECT_EQ(cnn_fusions(quick, no_acts).act_in_pool, none);
  for (const CnnPaths& p : {no_stored, no_kept}) {
    EXPECT_EQ(cnn_fusions(quick, p).act_in_pool, first);
    EXPECT_EQ(cnn_fusions(quick, p).act_from_output, first);
    EXPECT_EQ(cnn_fusions(quick, p).weight_grad_through_pool, through);
  }
  // Not after a convolution on a node: an activation on the image, then conv, act, pool.
  const ModelSpec later =
      ModelSpec::cnn(1, 8, 8, {layer("act"), layer("conv", 2), layer("act"), layer("maxpool")}, 3,
                     Activation::Relu);
  EXPECT_EQ(cnn_fusions(later).act_from_output,
            (std::vector<bool>{false, false, true, false, false}));
  EXPECT_EQ(cnn_fusions(later).weight_grad_through_pool, std::vector<int>(5, -1));
}

// ReLU's and tanh's derivatives from their output equal those from their input, float for float
// (what lets the CUDA pool backward read the activation's output, CnnFusions::act_from_output).
TEST(CnnTest, ActivationDerivativesFromTheOutputEqualThoseFromTheInput) {
  EXPECT_TRUE(derivatives_from_output(Activation::Relu));
  EXPECT_TRUE(derivatives_from_output(Activation::Tanh));
  EXPECT_FALSE(derivatives_from_output(Activation::Gelu));
  for (const Activation a : {Activation::Relu, Activation::Tanh}) {
    for (float z = -6.f; z <= 6.f; z += 0.0625f) {
      for (const float x : {z, std::nextafter(z, 7.f), -0.f, 0.f}) {
        const float y = activate(a, x);
        ASSERT_EQ(activate_derivative_of_output(a, y), activate_derivative(a, x)) << x;
        ASSERT_EQ(activate_second_derivative_of_output(a, y), activate_second_derivative(a, x))
            << x;
      }
    }
    // And against the closed forms in double.
    const double z = 0.3, t = std::tanh(z);
    if (a == Activation::Tanh) {
      EXPECT_NEAR(activate_derivative(a, z), 1 - t * t, 1e-15);
      EXPECT_NEAR(activate_second_derivative(a, z), -2 * t * (1 - t * t), 1e-15);
    }
  }
}

// The CUDA column kernels' index arithmetic (conv_index.hpp), run here on the CPU: multiplicative
// division against the plain one, and every column entry and every input gradient against a direct
// im2col and its adjoint, for several models and rows, strides, paddings and a whole-input window.
TEST(CnnTest, TheColumnKernelsIndexArithmeticIsExact) {
  for (uint32_t d : {1u, 2u, 3u, 7u, 9u, 28u, 49u, 144u, 784u, 1568u, 25088u, 12345u,
                     (1u << 20) + 1, (1u << 31) - 1, 1u << 31}) {
    const FastDiv f(d);
    std::vector<uint32_t> ns = {0u, 1u, d - 1, d, d + 1, (1u << 31) - 1, (1u << 31) - 2};
    for (uint64_t i = 0; i < 2000; ++i)
      ns.push_back(philox_draw(77, RngDomain::Data, d, i).v[0] % (1u << 31));
    for (uint32_t n : ns) {
      if (n >= (1u << 31)) continue;
      ASSERT_EQ(f.div(n), n / d) << n << " / " << d;
      ASSERT_EQ(f.mod(n), n % d) << n << " % " << d;
    }
  }
  const int K = 3, R = 2;
  for (const ConvShape& s : kColumnShapes) {
    SCOPED_TRACE(std::to_string(s.kh) + "x" + std::to_string(s.kw) + " stride " +
                 std::to_string(s.stride));
    const ColumnGeometry g(s, R);
    const int64_t ihw = int64_t(s.in_h) * s.in_w, ohw = int64_t(s.out_h) * s.out_w;
    const int64_t kc = int64_t(s.cin) * s.kh * s.kw, cols = R * ohw;
    ASSERT_EQ(g.model_columns(), kc * cols);
    ASSERT_EQ(g.model_input(), s.cin * R * ihw);
    const std::vector<double> xd = normals(size_t(K * g.model_input()), 9, 1.0);
    const std::vector<double> cd = normals(size_t(K * g.model_columns()), 10, 1.0);
    std::vector<float> x(xd.begin(), xd.end()), c(cd.begin(), cd.end());
    std::vector<float> dx_ref(x.size(), 0.f);
    for (int k = 0; k < K; ++k)
      for (int64_t q = 0; q < kc; ++q)
        for (int64_t n = 0; n < cols; ++n) {
          const int64_t t = (k * kc + q) * cols + n, src = direct_source(s, R, k, q, n);
          ASSERT_EQ(im2col_source(g, uint32_t(t)), src) << "entry " << t;
          if (src >= 0) dx_ref[size_t(src)] += c[size_t(t)];
        }
    for (uint32_t t = 0; t < uint32_t(x.size()); ++t)
      ASSERT_NEAR(col2im_sum(c.data(), g, t), dx_ref[t], 1e-5f * (1.f + std::fabs(dx_ref[t])))
          << "input " << t;
  }
}

// The CUDA backend's convolutions of few columns (no im2col: the forward with its bias and R
// twin, and the weight gradient's terms) per column, against float64 sums over direct columns.
TEST(CnnTest, TheSmallConvolutionsMatchAFloat64Convolution) {
  const int K = 3, R = 2;
  int tested = 0;
  for (const ConvShape& s : kColumnShapes) {
    const int kc = s.cin * s.kh * s.kw;
    if (kc > kSmallConv) continue;
    ++tested;
    SCOPED_TRACE(std::to_string(s.kh) + "x" + std::to_string(s.kw) + " stride " +
                 std::to_string(s.stride));
    const ColumnGeometry g(s, R);
    const int64_t cols = g.cols.d, cout = s.cout, model_out = cout * cols;
    const auto floats = [](size_t n, uint32_t stream) {
      const std::vector<double> d = normals(n, stream, 1.0);
      return std::vector<float>(d.begin(), d.end());
    };
    const std::vector<float> x = floats(size_t(K * g.model_input()), 11), rx = floats(x.size(), 12);
    // Each model's weights [cout][kc] then biases [cout], w and the direction v.
    const int64_t stride = cout * kc + cout;
    const std::vector<float> w = floats(size_t(K * stride), 13), v = floats(w.size(), 14);
    const auto col = [&](const std::vector<float>& in, int k, int64_t q, int64_t n) {
      const int64_t src = direct_source(s, R, k, q, n);
      return src < 0 ? 0.0 : double(in[size_t(src)]);
    };
    for (const bool with_rx : {true, false}) {
      std::vector<float> y(size_t(K * model_out)), ry(y.size()), y_plain(y.size()), act(y.size()),
          ract(y.size());
      for (int k = 0; k < K; ++k)
        for (int64_t n = 0; n < cols; ++n) {
          const float* wk = w.data() + k * stride;
          const float* vk = v.data() + k * stride;
          const int64_t at = k * model_out + n;
          SmallConvOut out, plain;
          out.y = y.data() + at, out.ry = ry.data() + at, out.a = act.data() + at,
          out.ra = ract.data() + at;
          out.act = Activation::Gelu;
          plain.y = y_plain.data() + at;
          small_conv_column(g, x.data(), with_rx ? rx.data() : nullptr, uint32_t(k), uint32_t(n),
                            wk, wk + cout * kc, vk, vk + cout * kc, out);
          small_conv_column(g, x.data(), nullptr, uint32_t(k), uint32_t(n), wk, wk + cout * kc,
                            nullptr, nullptr, plain);
        }
      for (int k = 0; k < K; ++k)
        for (int64_t c = 0; c < cout; ++c)
          for (int64_t n = 0; n < cols; ++n) {
            const size_t wc = size_t(k * stride + c * kc);
            double ref = w[size_t(k * stride + cout * kc + c)],
                   rref = v[size_t(k * stride + cout * kc + c)];
            for (int q = 0; q < kc; ++q) {
              ref += double(w[wc + size_t(q)]) * col(x, k, q, n);
              rref += double(v[wc + size_t(q)]) * col(x, k, q, n) +
                      (with_rx ? double(w[wc + size_t(q)]) * col(rx, k, q, n) : 0.0);
            }
            const size_t at = size_t(k * model_out + c * cols + n);
            ASSERT_NEAR(y[at], ref, 1e-5 * (1 + std::fabs(ref)))
                << "y, model " << k << " channel " << c << " column " << n;
            ASSERT_EQ(y_plain[at], y[at]) << "the plain pass computes y as the R pass does";
            ASSERT_NEAR(ry[at], rref, 1e-5 * (1 + std::fabs(rref)))
                << "ry, model " << k << " channel " << c;
            // The fused activation: what the activation's own kernel computes from y and ry.
            ASSERT_EQ(act[at], activate(Activation::Gelu, y[at]));
            ASSERT_EQ(ract[at], activate_derivative(Activation::Gelu, y[at]) * ry[at]);
          }
      // The weight gradient's terms: acc[q] = sum_n a col(x) (+ a2 col(rx)) for model k, channel c.
      const std::vector<float> a = floats(size_t(K * model_out), 15), a2 = floats(a.size(), 16);
      for (int k = 0; k < K; ++k)
        for (int64_t c = 0; c < cout; ++c) {
          float acc[kSmallConv] = {};
          for (int64_t n = 0; n < cols; ++n) {
            const size_t at = size_t(k * model_out + c * cols + n);
            small_weight_grad_column(g, x.data(), with_rx ? rx.data() : nullptr, uint32_t(k),
                                     uint32_t(n), a[at], a2[at], acc);
          }
          for (int q = 0; q < kSmallConv; ++q) {
            double ref = 0, scale = 0;
            for (int64_t n = 0; q < kc && n < cols; ++n) {
              const size_t at = size_t(k * model_out + c * cols + n);
              const double term = double(a[at]) * col(x, k, q, n) +
                                  (with_rx ? double(a2[at]) * col(rx, k, q, n) : 0.0);
              ref += term;
              scale += std::fabs(term);
            }
            ASSERT_NEAR(acc[q], ref, 1e-6 * (1 + scale))
                << "dW, model " << k << " channel " << c << " tap " << q;
          }
        }
    }
  }
  EXPECT_EQ(tested, 4);
}

TEST(CnnTest, TheSmallWeightGradientSplitsItsColumnsOnlyToFillTheGrid) {
  // The quickstart's first layer at 16 workers: 256 blocks of 25,088 columns want 4 each.
  EXPECT_EQ(small_grad_splits(256, 25088, 1024, 1 << 20), 4);
  // At 1,024 workers the channels fill the grid alone.
  EXPECT_EQ(small_grad_splits(16384, 25088, 1024, 1 << 20), 1);
  EXPECT_EQ(small_grad_splits(kSmallGradBlocks, 1 << 20, 1024, 1 << 20), 1);
  // Never more than a whole turn of 1,024 columns a block, nor more than the scratch holds.
  EXPECT_EQ(small_grad_splits(12, 2352, 1024, 1 << 20), 2);
  EXPECT_EQ(small_grad_splits(12, 1000, 1024, 1 << 20), 1);
  EXPECT_EQ(small_grad_splits(1, 1 << 24, 1024, 1 << 20), kSmallGradBlocks);
  EXPECT_EQ(small_grad_splits(1, 1 << 24, 1024, 7), 7);
  EXPECT_EQ(small_grad_splits(1, 1 << 24, 1024, 0), 1);
}
