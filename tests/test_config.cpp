#include <gtest/gtest.h>

#include <fstream>

#include "gossamer/config.hpp"
#include "gossamer/error.hpp"

using namespace gossamer;
using nlohmann::json;

namespace {
std::string config_failure(const json& user, const std::vector<std::string>& overrides = {}) {
  try {
    load_config(user, overrides, "cfg.json");
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Config);
    return e.what();
  }
  ADD_FAILURE() << "accepted: " << user.dump();
  return "";
}
}  // namespace

TEST(ConfigTest, DefaultsAreFilledIn) {
  const RunConfig c = load_config(json::object(), {}, "cfg.json");
  EXPECT_EQ(c.workers, 16);
  EXPECT_EQ(c.topology.name, "ring");
  EXPECT_EQ(c.model.hidden, std::vector<int>{128});
  EXPECT_EQ(c.resolved["optimizer"]["lr"], 0.1);
  EXPECT_EQ(c.resolved["algorithm"]["form"], "default");
}

TEST(ConfigTest, UnknownKeySuggestsTheClosestOne) {
  EXPECT_EQ(config_failure({{"optimizer", {{"lrr", 0.1}}}}),
            "cfg.json: unknown key 'optimizer.lrr'; did you mean 'optimizer.lr'?");
  EXPECT_NE(config_failure({{"optimiser", {{"lr", 0.1}}}}).find("did you mean 'optimizer"),
            std::string::npos);
  EXPECT_NE(
      config_failure({{"train", {{"momentum", 0.9}}}}).find("did you mean 'optimizer.momentum'"),
      std::string::npos);
  EXPECT_NE(config_failure({{"zzzzzzzzzzzz", 1}}).find("unknown key 'zzzzzzzzzzzz'"),
            std::string::npos);
}

TEST(ConfigTest, WrongTypeAndRangeNameKeyValueAndExpectation) {
  EXPECT_EQ(config_failure({{"optimizer", {{"lr", "0.1x"}}}}),
            "cfg.json: optimizer.lr: expected a number >= 0, found \"0.1x\"");
  EXPECT_EQ(config_failure({{"workers", 0}}),
            "cfg.json: workers: expected an integer in [1, 1048576], found 0");
  EXPECT_EQ(config_failure({{"workers", 2.5}}),
            "cfg.json: workers: expected an integer in [1, 1048576], found 2.5");
  EXPECT_NE(config_failure({{"optimizer", {{"momentum", 1.0}}}})
                .find("optimizer.momentum: expected a number in [0, 1)"),
            std::string::npos);
  EXPECT_NE(config_failure({{"topology", {{"name", "rign"}}}})
                .find("topology.name: expected one of \"ring\""),
            std::string::npos);
  EXPECT_NE(config_failure({{"model", {{"hidden", {128, -1}}}}}).find("model.hidden"),
            std::string::npos);
  EXPECT_NE(config_failure({{"model", 3}}).find("model: expected an object"), std::string::npos);
  EXPECT_NE(config_failure({{"optimizer", {{"milestones", {0.8, 0.4}}}}}).find("increasing"),
            std::string::npos);
  EXPECT_NE(config_failure({{"train", {{"steps", 10}, {"epochs", 2}}}}).find("not both"),
            std::string::npos);
  EXPECT_NE(config_failure({{"optimizer", {{"nesterov", true}}}}).find("momentum > 0"),
            std::string::npos);
  EXPECT_NE(config_failure(json::array()).find("top level"), std::string::npos);
  EXPECT_NE(config_failure({{"curvature", {{"topk", 10}, {"lanczos_steps", 5}}}})
                .find("curvature.lanczos_steps >= 10"),
            std::string::npos);
  EXPECT_NE(config_failure({{"algorithm", {{"name", "csgd"}, {"track_adsam", true}}}})
                .find("needs algorithm.name"),
            std::string::npos);
  EXPECT_NE(config_failure({{"data", {{"dataset", "cifar10"}}}}).find("data.path"),
            std::string::npos);
}

TEST(ConfigTest, SetOverridesParseJsonAndCheckKeys) {
  const RunConfig c = load_config(
      json::object(),
      {"optimizer.lr=0.05", "model.hidden=[64,32]", "topology.name=torus", "name=my run"},
      "cfg.json");
  EXPECT_DOUBLE_EQ(c.optimizer.lr, 0.05);
  EXPECT_EQ(c.model.hidden, (std::vector<int>{64, 32}));
  EXPECT_EQ(c.topology.name, "torus");
  EXPECT_EQ(c.name, "my run");
  EXPECT_EQ(config_failure(json::object(), {"optimizer.lr"}),
            "--set optimizer.lr: expected key.path=value, e.g. --set optimizer.lr=0.05");
  EXPECT_NE(
      config_failure(json::object(), {"optimizer.rl=0.1"}).find("did you mean 'optimizer.lr'"),
      std::string::npos);
  EXPECT_NE(
      config_failure(json::object(), {"optimizer.lr=fast"}).find("optimizer.lr: expected a number"),
      std::string::npos);
}

TEST(ConfigTest, SetSwitchesTheBudgetBetweenStepsAndEpochs) {
  const json file = {{"train", {{"steps", 10}}}};
  EXPECT_DOUBLE_EQ(load_config(file, {"train.epochs=2"}, "f").train.epochs, 2.0);
  const RunConfig back = load_config({{"train", {{"epochs", 3}}}}, {"train.steps=7"}, "f");
  EXPECT_EQ(back.train.epochs, 0.0);
  EXPECT_EQ(back.train.steps, 7);
  EXPECT_EQ(back.resolved["train"]["epochs"], 0.0);
}

TEST(ConfigTest, HashIsStableAndSensitive) {
  const RunConfig a = load_config(json::object(), {}, "x"),
                  b = load_config(json::object(), {}, "y");
  const RunConfig c = load_config(json::object(), {"seed=2"}, "x");
  EXPECT_EQ(config_hash(a.resolved), config_hash(b.resolved));
  EXPECT_NE(config_hash(a.resolved), config_hash(c.resolved));
  EXPECT_EQ(config_hash(a.resolved).size(), 16u);
}

TEST(ConfigTest, DocsConfigMdIsTheGeneratedReference) {
  std::ifstream in(std::string(GOSSAMER_SOURCE_DIR) + "/docs/CONFIG.md");
  ASSERT_TRUE(in) << "docs/CONFIG.md missing";
  const std::string doc((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(doc, config_reference_markdown())
      << "regenerate: ./build/gossamer config-reference > docs/CONFIG.md";
}

TEST(ConfigTest, ReferenceListsEveryKey) {
  const std::string md = config_reference_markdown();
  for (const char* key :
       {"`optimizer.lr`", "`topology.weights`", "`data.synthetic.kind`", "`train.eval_every`"})
    EXPECT_NE(md.find(key), std::string::npos) << key;
}
