#include <gtest/gtest.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "gossamer/dataset.hpp"
#include "gossamer/error.hpp"
#include "gossamer/partition.hpp"
#include "helpers.hpp"

using namespace gossamer;
namespace fs = std::filesystem;

namespace {

using Bytes = std::vector<unsigned char>;

void put_be32(Bytes& b, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back((v >> s) & 0xFF);
}

Bytes idx_images(uint32_t n, uint32_t rows, uint32_t cols) {
  Bytes b{0, 0, 8, 3};
  put_be32(b, n), put_be32(b, rows), put_be32(b, cols);
  for (uint32_t i = 0; i < n * rows * cols; ++i) b.push_back((i * 7) % 256);
  return b;
}

Bytes idx_labels(uint32_t n, int classes) {
  Bytes b{0, 0, 8, 1};
  put_be32(b, n);
  for (uint32_t i = 0; i < n; ++i) b.push_back(i % classes);
  return b;
}

class DataFiles : public gossamer::test_util::TempDirTest {
 protected:
  std::string write(const std::string& name, const Bytes& b, bool gz = false) {
    const std::string path = (m_dir / name).string();
    if (gz) {
      gzFile f = gzopen(path.c_str(), "wb");
      gzwrite(f, b.data(), unsigned(b.size()));
      gzclose(f);
    } else {
      std::ofstream(path, std::ios::binary)
          .write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
    }
    return path;
  }
  // The error message of a read that must fail.
  template <class F>
  std::string failure(F&& f) {
    try {
      f();
    } catch (const Error& e) {
      return e.what();
    }
    ADD_FAILURE() << "no error";
    return "";
  }
};

}  // namespace

TEST_F(DataFiles, ReadsIdxPlainAndGzipIdentically) {
  const auto img = write("img", idx_images(12, 4, 3)), lab = write("lab", idx_labels(12, 10));
  const auto img_gz = write("img.gz", idx_images(12, 4, 3), true),
             lab_gz = write("lab.gz", idx_labels(12, 10), true);
  const Dataset a = read_idx(img, lab, 10), b = read_idx(img_gz, lab_gz, 10);
  EXPECT_EQ(a.n, 12);
  EXPECT_EQ(a.features, 12);
  EXPECT_EQ(a.x, b.x);
  EXPECT_EQ(a.y, b.y);
  EXPECT_FLOAT_EQ(a.x[5], (5 * 7 % 256) / 255.0f);
  EXPECT_EQ(a.y[11], 1);
}

TEST_F(DataFiles, CorruptIdxFilesAreClearErrors) {
  const auto labels = write("lab", idx_labels(12, 10));
  Bytes magic = idx_images(12, 4, 3);
  magic[3] = 2;
  EXPECT_NE(failure([&] { read_idx(write("magic", magic), labels, 10); }).find("wrong IDX magic"),
            std::string::npos);
  Bytes cut = idx_images(12, 4, 3);
  cut.resize(cut.size() - 5);
  const std::string truncated = failure([&] { read_idx(write("cut", cut), labels, 10); });
  EXPECT_NE(truncated.find("truncated"), std::string::npos) << truncated;
  EXPECT_NE(truncated.find("cut"), std::string::npos) << "names the file: " << truncated;
  Bytes extra = idx_images(12, 4, 3);
  extra.push_back(0);
  EXPECT_NE(failure([&] { read_idx(write("extra", extra), labels, 10); }).find("trailing"),
            std::string::npos);
  const std::string count =
      failure([&] { read_idx(write("img", idx_images(11, 4, 3)), labels, 10); });
  EXPECT_NE(count.find("11 images but"), std::string::npos) << count;
  Bytes bad_label = idx_labels(12, 10);
  bad_label.back() = 10;
  const std::string range = failure(
      [&] { read_idx(write("img2", idx_images(12, 4, 3)), write("badlab", bad_label), 10); });
  EXPECT_NE(range.find("label 10 of sample 11 is out of range"), std::string::npos) << range;
  EXPECT_NE(
      failure([&] { read_idx((m_dir / "missing").string(), labels, 10); }).find("no such file"),
      std::string::npos);
  EXPECT_NE(failure([&] { read_idx(write("empty", {}), labels, 10); }).find("truncated"),
            std::string::npos);
  // A gzip stream cut in the middle.
  write("whole.gz", idx_images(50, 28, 28), true);
  std::ifstream in(m_dir / "whole.gz", std::ios::binary);
  Bytes gz((std::istreambuf_iterator<char>(in)), {});
  gz.resize(gz.size() / 2);
  const std::string gzcut = failure([&] { read_idx(write("half.gz", gz), labels, 10); });
  EXPECT_NE(gzcut.find("half.gz"), std::string::npos) << gzcut;
}

TEST_F(DataFiles, ReadsCifarBatchesAndRefusesBadOnes) {
  Bytes rec;
  for (int r = 0; r < 3; ++r) {
    rec.push_back(r * 3);
    for (int p = 0; p < 3072; ++p) rec.push_back((p + r) % 256);
  }
  const Dataset d = read_cifar10({write("b1.bin", rec), write("b2.bin", rec)});
  EXPECT_EQ(d.n, 6);
  EXPECT_EQ(d.features, 3072);
  EXPECT_EQ(d.y[4], 3);
  EXPECT_FLOAT_EQ(d.x[3072 + 1], 2 / 255.0f);
  Bytes cut = rec;
  cut.pop_back();
  EXPECT_NE(failure([&] { read_cifar10({write("cut.bin", cut)}); }).find("not a whole number"),
            std::string::npos);
  Bytes label = rec;
  label[0] = 12;
  EXPECT_NE(failure([&] { read_cifar10({write("lab.bin", label)}); }).find("label 12 of record 0"),
            std::string::npos);
}

TEST_F(DataFiles, NormalizationUsesTrainingStatistics) {
  DataSplit s;
  s.train.n = 4, s.train.features = 2, s.train.classes = 2;
  s.train.x = {1, 5, 3, 5, 5, 5, 7, 5};  // feature 0: mean 4, std sqrt(5); feature 1 constant
  s.train.y = {0, 1, 0, 1};
  s.test = s.train;
  s.test.x = {4, 6, 4 + std::sqrt(5.0f), 5, 0, 0, 0, 0};
  normalize_features(s);
  EXPECT_NEAR(s.train.x[0], -3 / std::sqrt(5.0), 1e-6);
  EXPECT_NEAR(s.train.x[1], 0.0, 1e-6);
  EXPECT_NEAR(s.test.x[0], 0.0, 1e-6);
  EXPECT_NEAR(s.test.x[1], 1.0, 1e-6);  // std 0 -> divide by 1
  EXPECT_NEAR(s.test.x[2], 1.0, 1e-6);
}

TEST(RealDataTest, FashionMnistHasItsKnownShape) {
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  if (!fs::exists(dir))
    GTEST_SKIP() << dir
                 << " not found: install Debian's dataset-fashion-mnist (README's commands do)";
  const Dataset train = read_idx(find_data_file(dir, "train-images-idx3-ubyte"),
                                 find_data_file(dir, "train-labels-idx1-ubyte"), 10);
  const Dataset test = read_idx(find_data_file(dir, "t10k-images-idx3-ubyte"),
                                find_data_file(dir, "t10k-labels-idx1-ubyte"), 10);
  EXPECT_EQ(train.n, 60000);
  EXPECT_EQ(test.n, 10000);
  EXPECT_EQ(train.features, 28 * 28);
  for (auto c : train.class_counts()) EXPECT_EQ(c, 6000);
  for (auto c : test.class_counts()) EXPECT_EQ(c, 1000);
}

TEST(SyntheticTest, SameSeedSameDataOtherSeedOtherData) {
  DataConfig c;
  c.dataset = "synthetic";
  c.synthetic_kind = "teacher";
  c.synthetic_train = 100, c.synthetic_test = 20, c.synthetic_features = 5, c.synthetic_classes = 3;
  c.synthetic_teacher_hidden = 8;
  const DataSplit a = make_synthetic(c, 1), b = make_synthetic(c, 1), other = make_synthetic(c, 2);
  EXPECT_EQ(a.train.x, b.train.x);
  EXPECT_EQ(a.train.y, b.train.y);
  EXPECT_NE(a.train.x, other.train.x);
  std::set<int> labels(a.train.y.begin(), a.train.y.end());
  EXPECT_GE(labels.size(), 2u);
}

namespace {
Dataset labelled(int n, int classes) {
  Dataset d;
  d.n = n, d.features = 1, d.classes = classes;
  d.x.assign(n, 0.f);
  for (int i = 0; i < n; ++i) d.y.push_back(i % classes);
  return d;
}
void expect_covers_once(const Partition& p, int64_t n) {
  std::vector<int> seen(n, 0);
  for (auto i : p.indices) ++seen[i];
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(seen[i], 1) << "index " << i;
}
}  // namespace

TEST(PartitionTest, IidSplitsEvenlyAndCoversEverySampleOnce) {
  PartitionConfig c;
  c.kind = "iid";
  const Partition p = make_partition(c, labelled(103, 10), 8, 1);
  expect_covers_once(p, 103);
  for (int k = 0; k < 8; ++k) EXPECT_NEAR(double(p.shard_size(k)), 103.0 / 8, 1.0);
}

TEST(PartitionTest, ShardsGiveEachWorkerAtMostKClasses) {
  PartitionConfig c;
  c.kind = "shards";
  c.classes_per_worker = 2;
  const Dataset d = labelled(1000, 10);
  const Partition p = make_partition(c, d, 10, 3);
  expect_covers_once(p, 1000);
  for (int k = 0; k < 10; ++k) {
    std::set<int> classes;
    for (int64_t e = p.offsets[k]; e < p.offsets[k + 1]; ++e) classes.insert(d.y[p.indices[e]]);
    EXPECT_LE(classes.size(), 2u);
  }
}

TEST(PartitionTest, DirichletSkewsWithSmallAlpha) {
  PartitionConfig c;
  c.kind = "dirichlet";
  const Dataset d = labelled(5000, 10);
  auto skew = [&](double alpha) {  // mean over workers of the largest class share
    c.alpha = alpha;
    const Partition p = make_partition(c, d, 10, 5);
    expect_covers_once(p, 5000);
    double total = 0;
    for (int k = 0; k < 10; ++k) {
      std::vector<int> counts(10, 0);
      for (int64_t e = p.offsets[k]; e < p.offsets[k + 1]; ++e) ++counts[d.y[p.indices[e]]];
      total += double(*std::max_element(counts.begin(), counts.end())) / double(p.shard_size(k));
    }
    return total / 10;
  };
  EXPECT_GT(skew(0.05), 0.6);
  EXPECT_LT(skew(1000.0), 0.2);
}

TEST(PartitionTest, MoreWorkersThanSamplesIsAnErrorThatNamesShared) {
  for (const char* kind : {"iid", "dirichlet", "shards"}) {
    PartitionConfig c;
    c.kind = kind;
    try {
      make_partition(c, labelled(5, 2), 8, 1);
      ADD_FAILURE() << kind << " accepted 8 workers for 5 samples";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("\"shared\""), std::string::npos) << e.what();
    }
  }
}

// shared: every worker's shard is the whole training set, for any number of workers.
TEST(PartitionTest, SharedGivesEveryWorkerTheWholeTrainingSet) {
  PartitionConfig c;
  c.kind = "shared";
  const Dataset d = labelled(5, 2);
  const Partition p = make_partition(c, d, 1000, 1);
  EXPECT_EQ(p.workers(), 1000);
  EXPECT_EQ(p.indices.size(), 5u) << "one copy of the indices, not one per worker";
  for (int k : {0, 1, 999}) {
    EXPECT_EQ(p.shard_size(k), 5);
    EXPECT_EQ(p.shard_start(k), 0);
  }
}
