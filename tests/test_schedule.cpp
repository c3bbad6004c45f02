#include <gtest/gtest.h>

#include <cmath>

#include "gossamer/schedule.hpp"

using namespace gossamer;

namespace {
OptimizerConfig base() {
  OptimizerConfig c;
  c.lr = 0.1;
  c.schedule = "constant";
  c.scaling = "none";
  c.base_batch = 1024;
  c.gamma = 0.1;
  c.warmup_start_factor = 0.1;
  return c;
}
}  // namespace

TEST(ScheduleTest, ScalingRules) {
  OptimizerConfig c = base();
  EXPECT_DOUBLE_EQ(scaled_lr(c, 8192), 0.1);
  c.scaling = "linear";
  EXPECT_DOUBLE_EQ(scaled_lr(c, 8192), 0.8);  // the seed paper: 0.1 at 1024 -> 0.8 at 8192
  c.scaling = "sqrt";
  EXPECT_DOUBLE_EQ(scaled_lr(c, 4096), 0.2);
}

TEST(ScheduleTest, WarmupThenStepDecay) {
  OptimizerConfig c = base();
  c.schedule = "step";
  c.milestones = {0.4, 0.8};
  c.warmup_steps = 10;
  EXPECT_DOUBLE_EQ(learning_rate(c, 0, 100, 1024), 0.01);
  EXPECT_DOUBLE_EQ(learning_rate(c, 5, 100, 1024), 0.1 * (0.1 + 0.9 * 0.5));
  EXPECT_DOUBLE_EQ(learning_rate(c, 10, 100, 1024), 0.1);
  EXPECT_DOUBLE_EQ(learning_rate(c, 39, 100, 1024), 0.1);
  EXPECT_NEAR(learning_rate(c, 40, 100, 1024), 0.01, 1e-16);
  EXPECT_NEAR(learning_rate(c, 80, 100, 1024), 0.001, 1e-17);
}

TEST(ScheduleTest, WarmupAsAFractionOfTheRun) {
  OptimizerConfig c = base();
  c.warmup_fraction = 0.01;
  EXPECT_DOUBLE_EQ(learning_rate(c, 0, 2000, 1024), 0.01);          // W = 20
  EXPECT_DOUBLE_EQ(learning_rate(c, 10, 2000, 1024), 0.1 * 0.55);
  EXPECT_DOUBLE_EQ(learning_rate(c, 20, 2000, 1024), 0.1);
  EXPECT_DOUBLE_EQ(learning_rate(c, 10, 1000, 1024), 0.1);           // W = 10 for a shorter run
}

TEST(ScheduleTest, CosineFromPeakToFloor) {
  OptimizerConfig c = base();
  c.schedule = "cosine";
  c.min_lr_factor = 0.1;
  EXPECT_DOUBLE_EQ(learning_rate(c, 0, 100, 1024), 0.1);
  EXPECT_NEAR(learning_rate(c, 50, 100, 1024), 0.1 * (0.1 + 0.9 * 0.5), 1e-15);
  EXPECT_NEAR(learning_rate(c, 100, 100, 1024), 0.01, 1e-15);
}
