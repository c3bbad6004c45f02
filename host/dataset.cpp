#include "gossamer/dataset.hpp"

#include <zlib.h>

#include <cmath>
#include <filesystem>

#include "gossamer/error.hpp"

namespace gossamer {

std::vector<int64_t> Dataset::class_counts() const {
  std::vector<int64_t> counts(classes, 0);
  for (int32_t label : y) ++counts[label];
  return counts;
}

std::vector<unsigned char> read_file_bytes(const std::string& path) {
  if (!std::filesystem::is_regular_file(path)) throw runtime_error(path + ": no such file");
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw runtime_error(path + ": cannot open");
  std::vector<unsigned char> bytes;
  unsigned char buf[1 << 16];
  for (;;) {
    const int got = gzread(f, buf, sizeof buf);
    if (got < 0) {
      int code = 0;
      const std::string why = gzerror(f, &code);
      gzclose(f);
      throw runtime_error(path + ": corrupt or truncated gzip data (" + why + ")");
    }
    if (got == 0) break;
    bytes.insert(bytes.end(), buf, buf + got);
  }
  // gzread stops quietly at a cut-off gzip stream; gzclose_r reports it.
  const int rc = gzclose_r(f);
  if (rc != Z_OK)
    throw runtime_error(path + ": corrupt or truncated gzip data (zlib code " + std::to_string(rc) +
                        ")");
  return bytes;
}

std::string find_data_file(const std::string& folder, const std::string& name) {
  const std::filesystem::path plain = std::filesystem::path(folder) / name;
  if (std::filesystem::exists(plain)) return plain.string();
  const std::string gz = plain.string() + ".gz";
  if (std::filesystem::exists(gz)) return gz;
  throw runtime_error(plain.string() + ": no such file (nor " + gz + ")");
}

void normalize_features(DataSplit& data) {
  const int f = data.train.features;
  std::vector<double> mean(f, 0.0), sq(f, 0.0);
  for (int64_t i = 0; i < data.train.n; ++i)
    for (int j = 0; j < f; ++j) mean[j] += data.train.row(i)[j];
  for (int j = 0; j < f; ++j) mean[j] /= double(data.train.n);
  for (int64_t i = 0; i < data.train.n; ++i)
    for (int j = 0; j < f; ++j) {
      const double c = data.train.row(i)[j] - mean[j];
      sq[j] += c * c;
    }
  std::vector<double> inv_std(f);
  for (int j = 0; j < f; ++j) {
    const double s = std::sqrt(sq[j] / double(data.train.n));
    inv_std[j] = s > 1e-12 ? 1.0 / s : 1.0;
  }
  for (Dataset* d : {&data.train, &data.test})
    for (int64_t i = 0; i < d->n; ++i)
      for (int j = 0; j < f; ++j) {
        float& v = d->x[i * f + j];
        v = float((v - mean[j]) * inv_std[j]);
      }
}

namespace {
void trim(Dataset& d, int64_t keep) {
  if (keep <= 0 || keep >= d.n) return;
  d.n = keep;
  d.x.resize(size_t(keep) * d.features);
  d.y.resize(keep);
}
}  // namespace

DataSplit load_data(const DataConfig& c, uint64_t seed) {
  DataSplit data;
  if (c.dataset == "synthetic") {
    data = make_synthetic(c, seed);
  } else if (c.dataset == "cifar10") {
    std::vector<std::string> train;
    for (int b = 1; b <= 5; ++b)
      train.push_back(find_data_file(c.path, "data_batch_" + std::to_string(b) + ".bin"));
    data.train = read_cifar10(train);
    data.test = read_cifar10({find_data_file(c.path, "test_batch.bin")});
  } else {  // fashion-mnist, mnist, idx: the MNIST file names
    // Looked up one by one, so a missing folder is reported at its first file.
    const std::string train_images = find_data_file(c.path, "train-images-idx3-ubyte");
    const std::string train_labels = find_data_file(c.path, "train-labels-idx1-ubyte");
    const std::string test_images = find_data_file(c.path, "t10k-images-idx3-ubyte");
    const std::string test_labels = find_data_file(c.path, "t10k-labels-idx1-ubyte");
    data.train = read_idx(train_images, train_labels, 10);
    data.test = read_idx(test_images, test_labels, 10);
  }
  if (data.train.features != data.test.features)
    throw runtime_error(data.test.source + ": " + std::to_string(data.test.features) +
                        " features per sample, but the training set " + data.train.source +
                        " has " + std::to_string(data.train.features));
  trim(data.train, c.train_samples);
  trim(data.test, c.test_samples);
  if (c.normalize == "feature") normalize_features(data);
  return data;
}

}  // namespace gossamer
