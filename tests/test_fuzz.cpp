// Seeded, deterministic fuzzing of everything that reads a user's bytes: configs (and --set
// overrides), IDX and CIFAR-10 files, checkpoints. Every input must end in success or in a
// gossamer::Error (a documented, clear error): any other exception (a library's type_error,
// out_of_range, bad_alloc from a size taken on trust), a crash or a hang is a failure. The
// first failing input is printed. A few seconds in all.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>

#include "gossamer/checkpoint.hpp"
#include "gossamer/config.hpp"
#include "gossamer/dataset.hpp"
#include "gossamer/error.hpp"
#include "gossamer/trainer.hpp"
#include "helpers.hpp"

using namespace gossamer;
using namespace gossamer::test_util;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

// Runs `body`; true if it succeeded or threw a gossamer::Error, else records a failure.
template <class F>
bool ends_cleanly(F&& body, const std::string& input) {
  try {
    body();
  } catch (const Error&) {
  } catch (const std::exception& e) {
    ADD_FAILURE() << "undocumented " << typeid(e).name() << ": " << e.what()
                  << "\n  input: " << input.substr(0, 2000);
    return false;
  }
  return true;
}

// Values that break naive readers: extreme and non-finite numbers, huge integers, odd strings,
// wrong types and nested junk.
json junk(std::mt19937_64& rng) {
  const json values[] = {nullptr,
                         true,
                         0,
                         -1,
                         json(std::numeric_limits<int64_t>::max()),
                         json(std::numeric_limits<int64_t>::min()),
                         json(std::numeric_limits<uint64_t>::max()),
                         1e19,
                         -1e308,
                         1e308,
                         json(NAN),
                         json(INFINITY),
                         0.5,
                         4.9e-324,
                         "",
                         std::string(10000, 'a'),
                         "../../x",
                         std::string("a\0b", 3),
                         "\xce\xbb\xe2\x88\x9e",
                         "\xff\xfe",
                         json::array(),
                         json::array({1, "a", nullptr, json::array({json::object()})}),
                         json::object(),
                         json{{"a", {{"b", {{"c", json::array()}}}}}}};
  return values[rng() % std::size(values)];
}

// Every path (JSON pointer) of a document, objects and arrays both.
void paths_of(const json& j, const json::json_pointer& at, std::vector<json::json_pointer>& out) {
  out.push_back(at);
  if (j.is_object())
    for (const auto& [k, v] : j.items()) paths_of(v, at / k, out);
  else if (j.is_array())
    for (size_t i = 0; i < j.size(); ++i) paths_of(j[i], at / i, out);
}

json rich_config() {
  return tiny_config({{"topology", {{"name", "torus"}}},
                      {"partition", {{"kind", "dirichlet"}, {"alpha", 0.3}}},
                      {"optimizer",
                       {{"momentum", 0.9},
                        {"schedule", "step"},
                        {"milestones", {0.5, 0.75}},
                        {"warmup_steps", 3}}},
                      {"curvature", {{"every", 10}, {"what", {"trace", "topk"}}}},
                      {"train", {{"epochs", 2}, {"steps", nullptr}}}});
}

}  // namespace

TEST(FuzzTest, MutatedConfigsLoadOrFailWithAConfigError) {
  std::mt19937_64 rng(20261126);
  const json base = rich_config();
  int failures = 0;
  for (int i = 0; i < 3000 && failures < 3; ++i) {
    json j = base;
    const int mutations = 1 + int(rng() % 3);
    for (int k = 0; k < mutations; ++k) {
      std::vector<json::json_pointer> paths;
      paths_of(j, json::json_pointer(), paths);
      const json::json_pointer p = paths[rng() % paths.size()];
      switch (rng() % 4) {
        case 0:  // delete
          if (!p.empty()) j.at(p.parent_pointer()).is_object()
                              ? void(j.at(p.parent_pointer()).erase(p.back()))
                              : void(j[p] = nullptr);
          break;
        case 1:  // another value
          (p.empty() ? j : j[p]) = junk(rng);
          break;
        case 2:  // a junk key beside it
          if (j.at(p).is_object()) j[p]["zz" + std::to_string(rng() % 3)] = junk(rng);
          break;
        default:  // the whole document junk
          if (rng() % 8 == 0) j = junk(rng);
      }
    }
    const bool ok = ends_cleanly(
        [&] {
          const RunConfig c = load_config(j, {}, "fuzz.json");
          resolve_steps(c, 60000);
        },
        j.dump(-1, ' ', true, json::error_handler_t::replace));
    failures += !ok;
  }
}

TEST(FuzzTest, MutatedSetOverridesLoadOrFailWithAConfigError) {
  std::mt19937_64 rng(7);
  const json base = rich_config();
  std::vector<json::json_pointer> paths;
  paths_of(base, json::json_pointer(), paths);
  const std::vector<std::string> raw = {"", "=", "1e400", "-", "[", "{\"a\":", "nan", "\"x",
                                        "[1,2", "9999999999999999999999", "null", "true", "\xff\xfe"};
  int failures = 0;
  for (int i = 0; i < 1500 && failures < 3; ++i) {
    std::string key = paths[rng() % paths.size()].to_string();
    std::replace(key.begin(), key.end(), '/', '.');
    if (!key.empty()) key.erase(0, 1);
    if (rng() % 5 == 0) key += ".extra";
    const std::string value =
        rng() % 2 ? raw[rng() % raw.size()] : junk(rng).dump(-1, ' ', false, json::error_handler_t::replace);
    const std::string set = rng() % 10 == 0 ? value : key + "=" + value;
    failures += !ends_cleanly([&] { resolve_steps(load_config(base, {set}, "fuzz.json"), 60000); },
                              "--set " + set);
  }
}

namespace {

class FuzzFiles : public TempDirTest {
 protected:
  std::string write(const std::string& name, const std::string& bytes) {
    const std::string path = (m_dir / name).string();
    std::ofstream(path, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
    return path;
  }
  // 1-8 random bytes changed, or cut at a random length, or random bytes appended, or one of the
  // first 24 bytes (headers, sizes) set to an extreme.
  static std::string mutate(std::string b, std::mt19937_64& rng) {
    switch (rng() % 4) {
      case 0:
        for (int k = 1 + int(rng() % 8); k > 0 && !b.empty(); --k) b[rng() % b.size()] = char(rng());
        break;
      case 1:
        b.resize(rng() % (b.size() + 1));
        break;
      case 2:
        b += std::string(1 + rng() % 64, char(rng()));
        break;
      default:
        if (!b.empty()) b[rng() % std::min<size_t>(24, b.size())] = char(rng() % 2 ? 0xff : 0x7f);
    }
    return b;
  }
};

std::string big_endian(uint32_t v) {
  return {char(v >> 24), char(v >> 16), char(v >> 8), char(v)};
}

}  // namespace

TEST_F(FuzzFiles, MutatedIdxFilesReadOrFailWithAClearError) {
  const int n = 20, rows = 4, cols = 4;
  std::string images = std::string("\0\0\x08\x03", 4) + big_endian(n) + big_endian(rows) +
                       big_endian(cols);
  std::string labels = std::string("\0\0\x08\x01", 4) + big_endian(n);
  for (int i = 0; i < n * rows * cols; ++i) images += char(i * 37);
  for (int i = 0; i < n; ++i) labels += char(i % 10);
  const std::string good_images = write("good-images", images), good_labels = write("good-labels", labels);
  ASSERT_EQ(read_idx(good_images, good_labels, 10).n, n);
  std::mt19937_64 rng(11);
  int failures = 0;
  for (int i = 0; i < 400 && failures < 3; ++i) {
    const bool which = rng() % 2;
    const std::string bad = mutate(which ? images : labels, rng);
    const std::string path = write("mutated", bad);
    failures += !ends_cleanly(
        [&] {
          const Dataset d = which ? read_idx(path, good_labels, 10) : read_idx(good_images, path, 10);
          ASSERT_EQ(d.x.size(), size_t(d.n) * d.features);
          ASSERT_EQ(d.y.size(), size_t(d.n));
        },
        std::string(which ? "images " : "labels ") + json(bad).dump(-1, ' ', true, json::error_handler_t::replace));
  }
}

TEST_F(FuzzFiles, MutatedCifarBatchesReadOrFailWithAClearError) {
  std::string batch;
  for (int r = 0; r < 3; ++r) {
    batch += char(r);
    for (int p = 0; p < 3072; ++p) batch += char(p * 7 + r);
  }
  std::mt19937_64 rng(13);
  int failures = 0;
  for (int i = 0; i < 300 && failures < 3; ++i) {
    const std::string bad = mutate(batch, rng);
    const std::string path = write("batch.bin", bad);
    failures += !ends_cleanly(
        [&] {
          const Dataset d = read_cifar10({path});
          ASSERT_EQ(d.x.size(), size_t(d.n) * 3072);
        },
        "cifar of " + std::to_string(bad.size()) + " bytes");
  }
}

// Mutated checkpoints, half of them with the checksum made right again, so that the mutation
// reaches the header and the arrays and not only the CRC check.
TEST_F(FuzzFiles, MutatedCheckpointsReadOrFailWithAClearError) {
  Sim sim = make_sim({{"optimizer", {{"momentum", 0.9}}}}, false);
  Checkpoint c;
  c.step = 5;
  c.config = sim->config.resolved;
  c.trainer = {{"best_test_acc", 0.5}};
  const std::string good = (m_dir / "good.bin").string();
  write_checkpoint(good, c, *sim->backend);
  std::ifstream in(good, std::ios::binary);
  const std::string bytes(std::istreambuf_iterator<char>(in), {});
  std::mt19937_64 rng(17);
  int failures = 0;
  for (int i = 0; i < 600 && failures < 3; ++i) {
    std::string bad = mutate(bytes, rng);
    if (i % 2 == 0 && bad.size() > 12) {
      const size_t body = bad.size() - 4;
      const uint32_t crc = uint32_t(crc32(0L, reinterpret_cast<const Bytef*>(bad.data()), uInt(body)));
      std::memcpy(bad.data() + body, &crc, 4);
    }
    const std::string path = write("mutated.bin", bad);
    failures += !ends_cleanly([&] { load_checkpoint(path, read_checkpoint(path), *sim->backend); },
                              "checkpoint of " + std::to_string(bad.size()) + " bytes, case " +
                                  std::to_string(i));
  }
}
