// Predictive-distribution metrics of claim 1 (the workers as an ensemble): accuracy,
// negative log-likelihood and expected calibration error over 15 equal-width confidence
// bins, ECE = sum_b (n_b / n) |accuracy_b - mean confidence_b| (Guo et al. 2017).
#pragma once
#include <array>
#include <cmath>
#include <cstdint>

namespace gossamer {

struct PredictiveStats {
  double accuracy = 0, nll = 0, ece = 0;
  std::array<double, 15> bin_accuracy{}, bin_confidence{};  // per bin, for reliability diagrams
  std::array<int64_t, 15> bin_count{};
};

class CalibrationBins {
 public:
  static constexpr int kBins = 15;
  // One sample: its predicted distribution's top probability, whether the top class is
  // right, and the probability of the true class.
  void add(double confidence, bool correct, double p_true) {
    const int b = std::min(kBins - 1, int(confidence * kBins));
    ++m_count[b];
    m_conf[b] += confidence;
    m_correct[b] += correct;
    m_nll += -std::log(std::max(p_true, 1e-300));
    ++m_n;
  }
  void merge(const CalibrationBins& o) {
    for (int b = 0; b < kBins; ++b)
      m_count[b] += o.m_count[b], m_conf[b] += o.m_conf[b], m_correct[b] += o.m_correct[b];
    m_nll += o.m_nll;
    m_n += o.m_n;
  }
  PredictiveStats stats() const {
    PredictiveStats s;
    double correct = 0;
    for (int b = 0; b < kBins; ++b) {
      correct += m_correct[b];
      s.bin_count[b] = m_count[b];
      if (m_count[b] == 0) continue;
      s.bin_accuracy[b] = m_correct[b] / double(m_count[b]);
      s.bin_confidence[b] = m_conf[b] / double(m_count[b]);
      s.ece +=
          double(m_count[b]) / double(m_n) * std::fabs(s.bin_accuracy[b] - s.bin_confidence[b]);
    }
    s.accuracy = correct / double(m_n);
    s.nll = m_nll / double(m_n);
    return s;
  }

 private:
  std::array<int64_t, kBins> m_count{};
  std::array<double, kBins> m_conf{}, m_correct{};
  double m_nll = 0;
  int64_t m_n = 0;
};

}  // namespace gossamer
