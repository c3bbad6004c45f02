// Seeded synthetic classification data (sizes and meaning in docs/CONFIG.md, data.synthetic.*).
#include <cmath>

#include "gossamer/dataset.hpp"
#include "rng.hpp"

namespace gossamer {
namespace {

// gaussian_mixture: mu_c ~ N(0, separation^2/features I); x = mu_y + N(0, I), y uniform.
// teacher: x ~ N(0, I); y = argmax_c (V tanh(U x))_c with U, V Gaussian (a random
// one-hidden-layer network), so a student MLP can fit it exactly.
struct Generator {
  const DataConfig& c;
  std::vector<double> means, U, V;

  Generator(const DataConfig& config, PhiloxStream& rng) : c(config) {
    const int f = c.synthetic_features, k = c.synthetic_classes, h = c.synthetic_teacher_hidden;
    if (c.synthetic_kind == "gaussian_mixture") {
      means.resize(size_t(k) * f);
      for (auto& v : means) v = rng.normal() * c.synthetic_separation / std::sqrt(double(f));
    } else {
      U.resize(size_t(h) * f);
      V.resize(size_t(k) * h);
      for (auto& v : U) v = rng.normal() / std::sqrt(double(f));
      for (auto& v : V) v = rng.normal() / std::sqrt(double(h));
    }
  }

  Dataset draw(int64_t n, PhiloxStream& rng, const char* source) const {
    const int f = c.synthetic_features, k = c.synthetic_classes, h = c.synthetic_teacher_hidden;
    Dataset d;
    d.source = source;
    d.n = n;
    d.features = f;
    d.classes = k;
    d.x.resize(size_t(n) * f);
    d.y.resize(n);
    std::vector<double> hidden(h), x(f);
    for (int64_t i = 0; i < n; ++i) {
      int label;
      if (!means.empty()) {
        label = int(rng() % uint32_t(k));
        for (int j = 0; j < f; ++j) x[j] = means[size_t(label) * f + j] + rng.normal();
      } else {
        for (int j = 0; j < f; ++j) x[j] = rng.normal();
        for (int a = 0; a < h; ++a) {
          double s = 0;
          for (int j = 0; j < f; ++j) s += U[size_t(a) * f + j] * x[j];
          hidden[a] = std::tanh(s);
        }
        label = 0;
        double best = -1e300;
        for (int cls = 0; cls < k; ++cls) {
          double s = 0;
          for (int a = 0; a < h; ++a) s += V[size_t(cls) * h + a] * hidden[a];
          if (s > best) best = s, label = cls;
        }
      }
      if (c.synthetic_label_noise > 0 && rng.uniform() <= c.synthetic_label_noise)
        label = int(rng() % uint32_t(k));
      for (int j = 0; j < f; ++j) d.x[size_t(i) * f + j] = float(x[j]);
      d.y[i] = label;
    }
    return d;
  }
};

}  // namespace

DataSplit make_synthetic(const DataConfig& c, uint64_t seed) {
  PhiloxStream model_rng(seed, RngDomain::Data, 0), train_rng(seed, RngDomain::Data, 1),
      test_rng(seed, RngDomain::Data, 2);
  const Generator gen(c, model_rng);
  return {gen.draw(c.synthetic_train, train_rng, "synthetic:train"),
          gen.draw(c.synthetic_test, test_rng, "synthetic:test")};
}

}  // namespace gossamer
