// Data sets: features as float rows (n x features), integer labels in [0, classes).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "gossamer/config.hpp"

namespace gossamer {

struct Dataset {
  std::string source;  // where it came from, for messages
  int64_t n = 0;
  int features = 0;
  int classes = 0;
  // Image rows (IDX: 1 x 28 x 28; CIFAR-10: 3 x 32 x 32, channel planes); 0 for other data.
  int height = 0, width = 0, channels = 0;
  std::vector<float> x;  // n x features, row-major
  std::vector<int32_t> y;

  const float* row(int64_t i) const { return x.data() + i * features; }
  std::vector<int64_t> class_counts() const;
};

struct DataSplit {
  Dataset train, test;
};

// Loads what the config names, trims to train_samples/test_samples, normalizes.
DataSplit load_data(const DataConfig& config, uint64_t seed);

// IDX files (MNIST, Fashion-MNIST): unsigned-byte tensors, plain or gzip. Pixels scaled to [0, 1].
Dataset read_idx(const std::string& images_path, const std::string& labels_path, int classes);
// The path of `name` in `folder`, plain or with .gz; error naming both if neither exists.
std::string find_data_file(const std::string& folder, const std::string& name);
// CIFAR-10 binary batches (1 label byte + 3072 pixel bytes a record), concatenated.
Dataset read_cifar10(const std::vector<std::string>& paths);
DataSplit make_synthetic(const DataConfig& config, uint64_t seed);

// Reads a whole file, gunzipping when it is gzip (zlib reads plain files as they are).
std::vector<unsigned char> read_file_bytes(const std::string& path);

// Per-feature standardization with the training set's mean and std (std 0 -> 1).
void normalize_features(DataSplit& data);

}  // namespace gossamer
