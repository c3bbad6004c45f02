// Data augmentation (augment.hpp): the crop and the flip against an explicit pad-crop-flip of a
// known image, the draws' ranges and balance, and the CPU backend's minibatches with it (sharded
// runs included). The CUDA gather's agreement is in the GPU suite.
#include <gtest/gtest.h>

#include <filesystem>

#include "gossamer/augment.hpp"
#include "gossamer/error.hpp"
#include "gossamer/simulation.hpp"
#include "gossamer/trainer.hpp"
#include "helpers.hpp"

using namespace gossamer;
using nlohmann::json;

TEST(AugmentTest, CropAndFlipMoveEveryPixelWhereTheyShould) {
  const AugmentShape a{3, 4, 2, 2, true};  // 2 channels of 3 x 4, padding 2
  std::vector<float> img(24);
  for (size_t i = 0; i < img.size(); ++i) img[i] = float(i + 1);
  for (int dy = -2; dy <= 2; ++dy)
    for (int dx = -2; dx <= 2; ++dx)
      for (bool flip : {false, true}) {
        // The reference: pad by 2 with zeros, crop the window at (2 + dy, 2 + dx), then mirror.
        const int ph = 3 + 4, pw = 4 + 4;
        std::vector<float> padded(size_t(2 * ph * pw), 0.f), out(24);
        for (int c = 0; c < 2; ++c)
          for (int y = 0; y < 3; ++y)
            for (int x = 0; x < 4; ++x) padded[size_t((c * ph + y + 2) * pw + x + 2)] = img[size_t(c * 12 + y * 4 + x)];
        for (int c = 0; c < 2; ++c)
          for (int y = 0; y < 3; ++y)
            for (int x = 0; x < 4; ++x) {
              const int cx = flip ? 3 - x : x;
              out[size_t(c * 12 + y * 4 + x)] = padded[size_t((c * ph + y + 2 + dy) * pw + cx + 2 + dx)];
            }
        for (int64_t i = 0; i < 24; ++i)
          ASSERT_EQ(augment_value(img.data(), a, AugmentDraw{dy, dx, flip}, i), out[size_t(i)])
              << "dy " << dy << " dx " << dx << " flip " << flip << " value " << i;
      }
}

TEST(AugmentTest, DrawsCoverTheRangeAndFlipHalf) {
  const AugmentShape a{28, 28, 1, 3, true};
  std::vector<int> dy(7, 0), dx(7, 0);
  int flips = 0, n = 0;
  for (uint64_t step = 0; step < 50; ++step)
    for (uint32_t j = 0; j < 40; ++j, ++n) {
      const AugmentDraw d = augment_draw(a, 9, 5, step, 40, j);
      ASSERT_GE(d.dy, -3);
      ASSERT_LE(d.dy, 3);
      ++dy[size_t(d.dy + 3)];
      ++dx[size_t(d.dx + 3)];
      flips += d.flip;
    }
  for (int c : dy) EXPECT_NEAR(c, n / 7.0, 5 * std::sqrt(n / 7.0));
  for (int c : dx) EXPECT_NEAR(c, n / 7.0, 5 * std::sqrt(n / 7.0));
  EXPECT_NEAR(flips, n / 2.0, 5 * std::sqrt(n / 4.0));
  // Off: no shift, no flip; another worker or step draws differently.
  const AugmentShape off{28, 28, 1, 0, false};
  const AugmentDraw z = augment_draw(off, 9, 5, 3, 40, 7);
  EXPECT_EQ(z.dy, 0);
  EXPECT_EQ(z.dx, 0);
  EXPECT_FALSE(z.flip);
  int same = 0;
  for (uint32_t j = 0; j < 40; ++j) {
    const AugmentDraw p = augment_draw(a, 9, 5, 3, 40, j), q = augment_draw(a, 9, 6, 3, 40, j);
    same += p.dy == q.dy && p.dx == q.dx && p.flip == q.flip;
  }
  EXPECT_LT(same, 10);
}

namespace {

// A small Fashion-MNIST simulation, or nothing (with the reason) where the files are missing.
std::unique_ptr<Simulation> fmnist_sim(const json& patch, std::string* why) {
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  if (!std::filesystem::exists(dir)) {
    *why = dir + " not found: install Debian's dataset-fashion-mnist (README's commands do)";
    return nullptr;
  }
  json c = {{"workers", 4},
            {"backend", "cpu"},
            {"data", {{"dataset", "fashion-mnist"}, {"train_samples", 512}, {"test_samples", 128}}},
            {"model", {{"hidden", {16}}, {"same_init", false}}},
            {"optimizer", {{"batch_size", 8}}}};
  test_util::merge(c, patch);
  return make_simulation(load_config(c, {}, "test"));
}

}  // namespace

// The CPU backend's minibatch with augmentation on gives the gradient of the augmented images
// (checked against the same gradient computed with the images augmented by hand), repeats by
// seed, and a sharded run augments each worker as the unsharded one does.
TEST(AugmentTest, TheCpuBackendTrainsOnTheAugmentedImages) {
  std::string why;
  auto plain = fmnist_sim({}, &why);
  if (!plain) GTEST_SKIP() << why;
  const json aug = {{"data", {{"augment", {{"crop", 4}, {"flip", true}}}}}};
  auto augmented = fmnist_sim(aug, &why);
  for (auto* s : {plain.get(), augmented.get()}) {
    s->backend->set_weights(plain->backend->weights());
    s->backend->sample(7);
    s->backend->local_gradient(true);
  }
  EXPECT_EQ(augmented->backend->minibatch_indices(), plain->backend->minibatch_indices());
  const std::vector<double> g_plain = plain->backend->gradients(), g_aug = augmented->backend->gradients();
  EXPECT_NE(g_plain, g_aug);
  // The augmented gradient equals the gradient on hand-augmented data: a dataset whose row for
  // each drawn index is that worker's augmented image. One worker at a time, batch slot by slot.
  const int64_t d = plain->model.dim;
  const AugmentShape a{28, 28, 1, 4, true};
  const std::vector<int64_t> idx = plain->backend->minibatch_indices();
  const std::vector<double> all = plain->backend->weights();
  for (int k = 0; k < 4; ++k) {
    const std::vector<double> w(all.begin() + k * d, all.begin() + (k + 1) * d);
    // Build the batch's augmented rows and take the subset gradient over them (mean over 8 rows).
    std::vector<int64_t> subset;
    Dataset& train = augmented->data.train;
    const Dataset original = train;
    for (int j = 0; j < 8; ++j) {
      const int64_t i = idx[size_t(k * 8 + j)];
      const AugmentDraw dr = augment_draw(a, 1, uint32_t(k), 7, 8, uint32_t(j));
      for (int f = 0; f < 784; ++f)
        train.x[size_t(j) * 784 + size_t(f)] = augment_value(original.row(i), a, dr, f);
      train.y[size_t(j)] = original.y[size_t(i)];
      subset.push_back(j);
    }
    auto check = make_cpu_backend(backend_setup(*augmented), false);
    check->set_curvature_subset(subset);
    std::vector<double> g;
    check->subset_loss(w, &g);
    train = original;
    double num = 0, den = 0;
    for (int64_t i = 0; i < d; ++i) {
      num += (g[size_t(i)] - g_aug[size_t(k * d + i)]) * (g[size_t(i)] - g_aug[size_t(k * d + i)]);
      den += g[size_t(i)] * g[size_t(i)];
    }
    EXPECT_LT(std::sqrt(num / den), 1e-5) << "worker " << k;
  }
  // Sharded: the same gradients.
  json sharded = aug;
  sharded["shards"] = 3;
  auto three = fmnist_sim(sharded, &why);
  three->backend->set_weights(plain->backend->weights());
  three->backend->sample(7);
  three->backend->local_gradient(true);
  EXPECT_EQ(three->backend->gradients(), g_aug);
}

TEST(AugmentTest, SyntheticDataWithAugmentationIsAConfigError) {
  try {
    load_config(test_util::tiny_config({{"data", {{"augment", {{"flip", true}}}}}}), {}, "a.json");
    FAIL() << "accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Config);
    EXPECT_NE(std::string(e.what()).find("a.json: data.augment"), std::string::npos) << e.what();
  }
}
