// GPU suites: skipped, saying why, where no GPU is visible.
#include <gtest/gtest.h>

#include "gossamer/cuda.hpp"
#include "gossamer/devices.hpp"
#include "helpers.hpp"

using namespace gossamer;

// GTEST_SKIP in SetUp skips the whole test body.
class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static const DeviceList list = list_devices();
    if (list.devices.empty()) GTEST_SKIP() << list.why_none;
  }
};

TEST_F(CudaTest, SamplingDrawsTheCpuBackendsMinibatchIndices) {
  test_util::Sim s = test_util::make_sim({{"workers", 5}, {"optimizer", {{"batch_size", 7}}}}, false);
  for (int64_t step : {0, 1, 36, 1000003}) {
    s->backend->sample(step);
    EXPECT_EQ(cuda_sample_minibatches(s->partition, s->config.seed, step, 7), s->backend->minibatch_indices()) << "step " << step;
  }
}
