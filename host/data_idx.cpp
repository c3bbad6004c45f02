// IDX format (LeCun's MNIST format): magic 0x00 0x00 TYPE NDIMS, NDIMS big-endian int32
// sizes, then the data. gossamer reads TYPE 0x08 (unsigned byte).
#include <string>

#include "gossamer/dataset.hpp"
#include "gossamer/error.hpp"

namespace gossamer {
namespace {

struct IdxTensor {
  std::vector<int64_t> dims;
  std::vector<unsigned char> bytes;  // whole file
  size_t data_offset = 0;
};

uint32_t big_endian(const unsigned char* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

IdxTensor read_idx_tensor(const std::string& path, int expected_dims) {
  IdxTensor t;
  t.bytes = read_file_bytes(path);
  const auto& b = t.bytes;
  if (b.size() < 4)
    throw runtime_error(path + ": truncated IDX file (" + std::to_string(b.size()) +
                        " bytes, no header)");
  if (b[0] != 0 || b[1] != 0 || b[2] != 0x08 || b[3] != expected_dims) {
    char found[16];
    std::snprintf(found, sizeof found, "%02x%02x%02x%02x", b[0], b[1], b[2], b[3]);
    throw runtime_error(path + ": wrong IDX magic number 0x" + found + ", expected 0x000008" +
                        (expected_dims == 3 ? "03 (unsigned-byte images, 3 dimensions)"
                                            : "01 (unsigned-byte labels, 1 dimension)"));
  }
  t.data_offset = 4 + 4 * size_t(expected_dims);
  if (b.size() < t.data_offset) throw runtime_error(path + ": truncated IDX header");
  uint64_t count = 1;
  bool overflow = false;
  for (int i = 0; i < expected_dims; ++i) {
    t.dims.push_back(big_endian(&b[4 + 4 * i]));
    overflow = overflow || __builtin_mul_overflow(count, uint64_t(t.dims.back()), &count);
  }
  if (overflow) count = UINT64_MAX;  // can never equal the bytes the file has
  const uint64_t have = b.size() - t.data_offset;
  if (have != count) {
    std::string shape;
    for (auto d : t.dims) shape += (shape.empty() ? "" : "x") + std::to_string(d);
    throw runtime_error(path + ": header says " + shape + " = " + std::to_string(count) +
                        " bytes of data, file has " + std::to_string(have) +
                        (have < count ? " (truncated)" : " (trailing bytes)"));
  }
  return t;
}

}  // namespace

Dataset read_idx(const std::string& images_path, const std::string& labels_path, int classes) {
  const IdxTensor images = read_idx_tensor(images_path, 3);
  const IdxTensor labels = read_idx_tensor(labels_path, 1);
  if (images.dims[0] != labels.dims[0])
    throw runtime_error(images_path + " holds " + std::to_string(images.dims[0]) + " images but " +
                        labels_path + " holds " + std::to_string(labels.dims[0]) + " labels");
  if (images.dims[0] == 0 || images.dims[1] == 0 || images.dims[2] == 0)
    throw runtime_error(images_path + ": holds no data (" + std::to_string(images.dims[0]) + " x " +
                        std::to_string(images.dims[1]) + " x " + std::to_string(images.dims[2]) +
                        " images)");
  Dataset d;
  d.source = images_path;
  d.n = images.dims[0];
  d.features = int(images.dims[1] * images.dims[2]);
  d.height = int(images.dims[1]);
  d.width = int(images.dims[2]);
  d.channels = 1;
  d.classes = classes;
  d.x.resize(size_t(d.n) * d.features);
  for (size_t i = 0; i < d.x.size(); ++i) d.x[i] = images.bytes[images.data_offset + i] / 255.0f;
  d.y.resize(d.n);
  for (int64_t i = 0; i < d.n; ++i) {
    const int label = labels.bytes[labels.data_offset + i];
    if (label >= classes)
      throw runtime_error(labels_path + ": label " + std::to_string(label) + " of sample " +
                          std::to_string(i) + " is out of range, expected 0.." +
                          std::to_string(classes - 1));
    d.y[i] = label;
  }
  return d;
}

}  // namespace gossamer
