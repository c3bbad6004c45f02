// CIFAR-10 binary version: records of 1 label byte and 3072 pixel bytes (R, G, B planes of 32x32).
#include "gossamer/dataset.hpp"
#include "gossamer/error.hpp"

namespace gossamer {

Dataset read_cifar10(const std::vector<std::string>& paths) {
  constexpr int kPixels = 3072, kRecord = kPixels + 1, kClasses = 10;
  Dataset d;
  d.source = paths.empty() ? "" : paths.front();
  d.features = kPixels;
  d.height = d.width = 32;
  d.channels = 3;  // the R, G and B planes, as the records store them
  d.classes = kClasses;
  for (const auto& path : paths) {
    const auto bytes = read_file_bytes(path);
    if (bytes.empty() || bytes.size() % kRecord != 0)
      throw runtime_error(path + ": " + std::to_string(bytes.size()) +
                          " bytes is not a whole number of CIFAR-10 records of " +
                          std::to_string(kRecord) +
                          " bytes (truncated or not a CIFAR-10 binary batch)");
    const int64_t records = int64_t(bytes.size() / kRecord);
    for (int64_t r = 0; r < records; ++r) {
      const unsigned char* rec = &bytes[size_t(r) * kRecord];
      if (rec[0] >= kClasses)
        throw runtime_error(path + ": label " + std::to_string(rec[0]) + " of record " +
                            std::to_string(r) + " is out of range, expected 0..9");
      d.y.push_back(rec[0]);
      for (int p = 0; p < kPixels; ++p) d.x.push_back(rec[1 + p] / 255.0f);
    }
    d.n += records;
  }
  return d;
}

}  // namespace gossamer
