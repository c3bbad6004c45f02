#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "gossamer/philox.hpp"

using namespace gossamer;

// Known-answer vectors of Philox4x32-10 from Random123's kat_vectors.
TEST(PhiloxTest, MatchesRandom123KnownAnswers) {
  struct Kat {
    Philox4 ctr;
    uint32_t k0, k1;
    Philox4 expect;
  } kats[] = {
      {{{0, 0, 0, 0}}, 0, 0, {{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}}},
      {{{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}},
       0xffffffff,
       0xffffffff,
       {{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}}},
      {{{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}},
       0xa4093822,
       0x299f31d0,
       {{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}}},
  };
  for (const auto& k : kats) {
    const Philox4 out = philox4x32(k.ctr, k.k0, k.k1);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(out.v[i], k.expect.v[i]) << "word " << i;
  }
}

TEST(PhiloxTest, PermutationIsABijectionForAnySize) {
  for (uint64_t n : {1, 2, 3, 7, 64, 100, 1000, 4097}) {
    std::vector<uint64_t> seen;
    for (uint64_t i = 0; i < n; ++i) seen.push_back(philox_permute(i, n, 42, 3, 5));
    std::sort(seen.begin(), seen.end());
    for (uint64_t i = 0; i < n; ++i) ASSERT_EQ(seen[i], i) << "n = " << n;
  }
}

TEST(PhiloxTest, PermutationDependsOnWorkerAndEpoch) {
  const uint64_t n = 1000;
  int same_worker = 0, same_epoch = 0;
  for (uint64_t i = 0; i < n; ++i) {
    same_worker += philox_permute(i, n, 1, 0, 0) == philox_permute(i, n, 1, 1, 0);
    same_epoch += philox_permute(i, n, 1, 0, 0) == philox_permute(i, n, 1, 0, 1);
  }
  // Two independent random permutations agree in about one place.
  EXPECT_LT(same_worker, 10);
  EXPECT_LT(same_epoch, 10);
}

TEST(PhiloxTest, MinibatchStreamVisitsTheShardOncePerEpoch) {
  const uint64_t shard = 37;
  const uint32_t batch = 5;
  std::vector<int> hits(shard, 0);
  // 37 epochs' worth of batches of 5: every sample exactly 5 times... first check one epoch.
  for (uint64_t step = 0; step * batch < shard * batch; ++step)
    for (uint32_t j = 0; j < batch; ++j) ++hits[minibatch_position(7, 2, step, batch, j, shard)];
  for (uint64_t i = 0; i < shard; ++i) EXPECT_EQ(hits[i], int(batch)) << "sample " << i;
}

TEST(PhiloxTest, NormalsHaveUnitMomentsAndUniformsStayInRange) {
  double sum = 0, sq = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    const Philox4 r = philox_draw(9, RngDomain::Init, 0, uint64_t(i));
    const double z = philox_normal(r.v[0], r.v[1]);
    sum += z, sq += z * z;
    const double u = philox_uniform(r.v[2]);
    ASSERT_GT(u, 0.0);
    ASSERT_LE(u, 1.0);
  }
  EXPECT_NEAR(sum / n, 0.0, 5.0 / std::sqrt(double(n)));
  EXPECT_NEAR(sq / n, 1.0, 5.0 * std::sqrt(2.0 / n));
}
