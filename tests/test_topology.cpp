#include <gtest/gtest.h>

#include <cmath>

#include "gossamer/error.hpp"
#include "gossamer/topology.hpp"

using namespace gossamer;

namespace {
TopologyConfig topo(const std::string& name, const std::string& weights = "uniform") {
  TopologyConfig c;
  c.name = name;
  c.weights = weights;
  return c;
}
}  // namespace

TEST(TopologyTest, RingUniformGapMatchesClosedForm) {
  // P = circulant(1/3, 1/3, 1/3): eigenvalues 1/3 + 2/3 cos(2 pi j / m); gap 1 - (1/3 + 2/3 cos(2
  // pi / m)).
  for (int m : {3, 4, 5, 8, 16, 33, 64}) {
    TopologySchedule s(topo("ring"), m, 1);
    const SpectralGap g = spectral_gap(s.phase(0));
    const double expect = 1.0 - (1.0 / 3 + 2.0 / 3 * std::cos(2 * M_PI / m));
    EXPECT_NEAR(g.gap_sigma, expect, 1e-12) << "m = " << m;
    EXPECT_NEAR(g.gap_lambda, expect, 1e-12) << "m = " << m;
  }
}

struct Case {
  std::string name, weights;
  int m;
  bool symmetric;
};

class AllTopologiesTest : public ::testing::TestWithParam<Case> {};

TEST_P(AllTopologiesTest, RowStochasticConnectedSymmetricAsDesigned) {
  const Case c = GetParam();
  TopologySchedule s(topo(c.name, c.weights), c.m, 7);
  const MixingProperties p = analyze_topology(s);
  EXPECT_TRUE(p.nonnegative);
  EXPECT_TRUE(p.row_stochastic);
  EXPECT_TRUE(p.column_stochastic);  // every topology of docs/ARCHITECTURE.md is doubly stochastic
  EXPECT_TRUE(p.connected);
  EXPECT_EQ(p.symmetric, c.symmetric);
  if (!s.time_varying()) {
    EXPECT_GT(p.gap.gap_sigma, 0.0);
    EXPECT_LE(p.gap.gap_sigma, 1.0 + 1e-12);
  }
  // Independent check of the stochasticity straight from the CSR.
  for (int i = 0; i < s.phases(); ++i) {
    const Csr& P = s.phase(i);
    for (int r = 0; r < P.n; ++r) {
      double sum = 0;
      for (int e = P.row_ptr[r]; e < P.row_ptr[r + 1]; ++e) sum += P.val[e];
      ASSERT_NEAR(sum, 1.0, 1e-12);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Topologies, AllTopologiesTest,
    ::testing::Values(Case{"ring", "uniform", 10, true}, Case{"ring", "metropolis", 7, true},
                      Case{"grid", "uniform", 12, true}, Case{"grid", "metropolis", 16, true},
                      Case{"torus", "uniform", 16, true}, Case{"torus", "metropolis", 15, true},
                      Case{"exponential", "uniform", 12, false},
                      Case{"exponential", "uniform", 16, false},
                      Case{"one_peer_exponential", "uniform", 16, false},
                      Case{"one_peer_exponential", "uniform", 10, false},
                      Case{"hypercube", "uniform", 16, true}, Case{"star", "uniform", 9, true},
                      Case{"star", "metropolis", 9, true}, Case{"complete", "uniform", 6, true},
                      Case{"erdos_renyi", "uniform", 20, true},
                      Case{"erdos_renyi", "metropolis", 20, true}),
    [](const auto& info) {
      return info.param.name + "_" + info.param.weights + "_" + std::to_string(info.param.m);
    });

TEST(TopologyTest, ExponentialHasTheSeedPapersWeights) {
  TopologySchedule s(topo("exponential"), 12, 1);  // ceil(log2 12) = 4: self, +1, +2, +4, +8
  const auto d = s.phase(0).dense();
  for (int k = 0; k < 12; ++k) {
    int nonzero = 0;
    for (int j = 0; j < 12; ++j) nonzero += d[k * 12 + j] != 0;
    EXPECT_EQ(nonzero, 5);
    for (int off : {0, 1, 2, 4, 8}) EXPECT_DOUBLE_EQ(d[k * 12 + (k + off) % 12], 0.2);
  }
}

TEST(TopologyTest, OnePeerExponentialAveragesExactlyOverAPeriodForPowersOfTwo) {
  TopologySchedule s(topo("one_peer_exponential"), 16, 1);
  EXPECT_EQ(s.phases(), 4);
  const Csr& p3 = s.at(7);  // 7 mod 4 = 3: partner k + 8
  const auto d = p3.dense();
  EXPECT_DOUBLE_EQ(d[0 * 16 + 8], 0.5);
  EXPECT_DOUBLE_EQ(d[5 * 16 + 13], 0.5);
  std::vector<Csr> phases;
  for (int i = 0; i < 4; ++i) phases.push_back(s.phase(i));
  EXPECT_NEAR(product_gap(phases), 1.0, 1e-12);  // the product is 11^T/m
}

TEST(TopologyTest, MetropolisWeightsOnAStar) {
  TopologySchedule s(topo("star", "metropolis"), 5,
                     1);  // centre degree 4, leaves 1: edge weight 1/5
  const auto d = s.phase(0).dense();
  EXPECT_DOUBLE_EQ(d[0 * 5 + 3], 0.2);
  EXPECT_DOUBLE_EQ(d[3 * 5 + 3], 0.8);
  EXPECT_NEAR(d[0], 0.2, 1e-15);
}

TEST(TopologyTest, CompleteGraphHasGapOne) {
  TopologySchedule s(topo("complete"), 8, 1);
  EXPECT_NEAR(spectral_gap(s.phase(0)).gap_sigma, 1.0, 1e-12);
}

TEST(TopologyTest, ShuffleRelabelsButKeepsTheSpectrum) {
  TopologyConfig c = topo("ring");
  c.shuffle = true;
  TopologySchedule s(c, 9, 3);
  const Csr a = s.at(0), b = s.at(1);
  EXPECT_NE(a.dense(), b.dense());
  EXPECT_NEAR(spectral_gap(a).gap_sigma, spectral_gap(s.phase(0)).gap_sigma, 1e-12);
  EXPECT_NEAR(spectral_gap(b).gap_sigma, spectral_gap(s.phase(0)).gap_sigma, 1e-12);
}

TEST(TopologyTest, BadRequestsAreClearErrors) {
  EXPECT_THROW(TopologySchedule(topo("hypercube"), 12, 1), Error);
  EXPECT_THROW(TopologySchedule(topo("exponential", "metropolis"), 8, 1), Error);
  TopologyConfig custom = topo("custom");
  custom.matrix = nlohmann::json::array({{0.5, 0.4}, {0.5, 0.5}});  // row 0 sums to 0.9
  try {
    TopologySchedule s(custom, 2, 1);
    FAIL() << "a non-stochastic matrix was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("topology.matrix[0]"), std::string::npos) << e.what();
  }
  custom.matrix = nlohmann::json::array({{0.5, 0.5}, {0.5, 0.5}});
  EXPECT_NO_THROW(TopologySchedule(custom, 2, 1));
  TopologyConfig edges = topo("custom");
  edges.edges = nlohmann::json::array({{0, 1}, {1, 5}});
  EXPECT_THROW(TopologySchedule(edges, 3, 1), Error);
  edges.edges = nlohmann::json::array({{0, 1}, {1, 2}});
  EXPECT_THROW(TopologySchedule(edges, 4, 1), Error);  // worker 3 is cut off
  EXPECT_NO_THROW(TopologySchedule(edges, 3, 1));
}

// The gaps at scale (host/spectrum.cpp) against the dense Eigen path on every topology and
// weight rule with a closed form, at sizes from 2 to 512 (odd, even, prime, square, 2^k).
TEST(SpectrumTest, ClosedFormsMatchTheDensePath) {
  const std::vector<std::pair<std::string, std::string>> kinds = {
      {"ring", "uniform"},      {"ring", "metropolis"},  {"exponential", "uniform"},
      {"torus", "uniform"},     {"grid", "uniform"},     {"hypercube", "uniform"},
      {"star", "uniform"},      {"complete", "uniform"}, {"torus", "metropolis"}};
  for (const auto& [name, weights] : kinds)
    for (int m : {2, 3, 5, 8, 12, 16, 30, 49, 64, 97, 128, 200, 512}) {
      if (name == "hypercube" && (m & (m - 1))) continue;
      if ((name == "grid" || name == "torus") && m > 256) continue;  // dense SVD of 512 is slow-ish
      SCOPED_TRACE(name + " " + weights + " m = " + std::to_string(m));
      TopologySchedule s(topo(name, weights), m, 1);
      const SpectralGap fast = schedule_gap(s, false), dense = spectral_gap(s.phase(0));
      EXPECT_NEAR(fast.gap_sigma, dense.gap_sigma, 1e-9);
      EXPECT_NEAR(fast.gap_lambda, dense.gap_lambda, 1e-9);
      if (weights == "uniform" || name == "ring")
        EXPECT_NE(fast.method.find("closed form"), std::string::npos) << fast.method;
    }
}

TEST(SpectrumTest, OnePeerPeriodGapMatchesTheDenseProduct) {
  for (int m : {3, 5, 8, 12, 16, 100}) {
    TopologySchedule s(topo("one_peer_exponential"), m, 1);
    std::vector<Csr> phases;
    for (int i = 0; i < s.phases(); ++i) phases.push_back(s.phase(i));
    EXPECT_NEAR(schedule_gap(s, true).gap_sigma, product_gap(phases), 1e-9) << "m = " << m;
    EXPECT_NEAR(schedule_gap(s, false).gap_sigma, spectral_gap(s.phase(0)).gap_sigma, 1e-9);
  }
}

// Graphs without a closed form: Lanczos on P^T P against the dense SVD.
TEST(SpectrumTest, LanczosMatchesTheDensePathWithItsResidual) {
  for (const auto& [name, weights, m] :
       std::vector<std::tuple<std::string, std::string, int>>{{"erdos_renyi", "uniform", 100},
                                                              {"erdos_renyi", "metropolis", 300},
                                                              {"grid", "metropolis", 120},
                                                              {"star", "metropolis", 50},
                                                              {"ring", "uniform", 200}}) {
    SCOPED_TRACE(name + " " + weights + " m = " + std::to_string(m));
    TopologySchedule s(topo(name, weights), m, 3);
    const SpectralGap lanczos = lanczos_spectral_gap(s.phase(0)),
                      dense = spectral_gap(s.phase(0));
    EXPECT_NEAR(lanczos.gap_sigma, dense.gap_sigma, 1e-7);
    EXPECT_EQ(lanczos.tolerance, kSpectrumTolerance);
    EXPECT_LE(lanczos.residual, 1e-6);
  }
}

// A million workers: the gaps from their closed forms, in seconds, with no m x m anything.
TEST(SpectrumTest, GapsAtAMillionWorkersMatchTheirClosedForms) {
  const int m = 1 << 20;
  {
    TopologySchedule s(topo("ring"), m, 1);
    const MixingProperties p = analyze_topology(s);
    EXPECT_NEAR(p.gap.gap_sigma, (2 - 2 * std::cos(2 * M_PI / m)) / 3, 1e-15);
    EXPECT_TRUE(p.symmetric && p.row_stochastic && p.column_stochastic && p.connected);
  }
  {
    TopologySchedule s(topo("torus"), m, 1);  // 1024 x 1024, degree 4, weights 1/5
    EXPECT_NEAR(analyze_topology(s).gap.gap_sigma, (2 - 2 * std::cos(2 * M_PI / 1024)) / 5, 1e-14);
  }
  {
    // One-peer exponential with m = 2^k: a period of its phases averages exactly.
    TopologySchedule s(topo("one_peer_exponential"), m, 1);
    const MixingProperties p = analyze_topology(s);
    EXPECT_NEAR(p.period_gap_sigma, 1.0, 1e-9);
    EXPECT_NEAR(p.gap.gap_sigma, 0.0, 1e-9);  // one phase alone: pairs, never connected
    EXPECT_TRUE(p.connected);
  }
  {
    TopologySchedule s(topo("hypercube"), 1 << 16, 1);  // degree 16, weights 1/17
    EXPECT_NEAR(analyze_topology(s).gap.gap_sigma, 2.0 / 17, 1e-12);
  }
}

// Erdos-Renyi drawn in O(m + edges) by geometric gaps: the edge count is Binomial(m(m-1)/2, p)
// (within 5 standard deviations), and 100,000 workers take seconds, not an m^2 loop.
TEST(TopologyTest, ErdosRenyiHasTheBinomialEdgeCount) {
  for (const double p : {0.01, 0.05, 0.3}) {
    TopologyConfig c = topo("erdos_renyi");
    c.probability = p;
    const int m = 2000;
    TopologySchedule s(c, m, 7);
    const double edges = double(s.phase(0).nnz() - m) / 2, pairs = double(m) * (m - 1) / 2;
    EXPECT_NEAR(edges, p * pairs, 5 * std::sqrt(pairs * p * (1 - p))) << "p = " << p;
  }
  TopologySchedule big(topo("erdos_renyi"), 100000, 1);
  EXPECT_TRUE(analyze_topology(big).connected);
}
