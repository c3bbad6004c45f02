// Small simulations for the tests: a synthetic data set, its partition, a model and a CPU backend.
#pragma once
#include <memory>

#include "gossamer/backend.hpp"
#include "gossamer/config.hpp"

namespace gossamer::test_util {

struct Sim {
  RunConfig config;
  DataSplit data;
  Partition partition;
  ModelSpec model;
  std::unique_ptr<Backend> backend;
};

// A tiny default config (synthetic gaussian mixture, 8 features, 3 classes, 256 samples)
// with `patch` merged over it.
inline nlohmann::json tiny_config(const nlohmann::json& patch = nlohmann::json::object()) {
  nlohmann::json c = {
      {"workers", 4},
      {"data", {{"dataset", "synthetic"},
                {"synthetic", {{"features", 8}, {"classes", 3}, {"train", 256}, {"test", 128}}}}},
      {"model", {{"hidden", {6}}, {"activation", "tanh"}}},
      {"optimizer", {{"lr", 0.1}, {"batch_size", 5}}},
      {"train", {{"steps", 20}, {"eval_every", 10}}},
  };
  c.merge_patch(patch);
  return c;
}

inline Sim make_sim(const nlohmann::json& patch, bool float64) {
  Sim s;
  s.config = load_config(tiny_config(patch), {}, "test");
  s.data = load_data(s.config.data, s.config.seed);
  s.partition = make_partition(s.config.partition, s.data.train, s.config.workers, s.config.seed);
  s.model = ModelSpec::mlp(s.data.train.features, s.config.model.hidden, s.data.train.classes, s.config.model.activation);
  BackendSetup setup;
  setup.model = &s.model;
  setup.data = &s.data;
  setup.partition = &s.partition;
  setup.workers = s.config.workers;
  setup.batch = s.config.optimizer.batch_size;
  setup.seed = s.config.seed;
  setup.optimizer = {s.config.optimizer.momentum, s.config.optimizer.weight_decay, s.config.optimizer.nesterov};
  s.backend = make_cpu_backend(setup, float64);
  s.backend->set_weights(init_weights(s.model, s.config.model, s.config.workers, s.config.seed));
  return s;
}

}  // namespace gossamer::test_util
