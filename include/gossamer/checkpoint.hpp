// Checkpoints: everything to continue a run bit for bit, in a versioned binary file with a
// CRC-32 checksum, written to a temporary file and renamed (a crash never leaves half a
// checkpoint as the latest). W and the momentum are streamed from the backend row by row in its
// own precision (float32 runs stay bit-exact, no m x d buffer on the host, the checksum
// computed chunk by chunk) and read back the same way.
//
// Layout (little-endian), version 2:
//   "GOSSCKPT"  u32 version  u64 n  n bytes of JSON header
//   workers x dim scalars of W, row by row (scalar_bytes each: 4 float32, 8 float64)
//   the same for the momentum when the header says so
//   u32 CRC-32 (zlib) of every byte before it
// The header holds step, workers, dim, precision, momentum, seed, config_hash, the resolved
// config, the training-loss window, and the trainer's own state.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "gossamer/backend.hpp"

namespace gossamer {

inline constexpr uint32_t kCheckpointVersion = 2;

struct Checkpoint {
  int64_t step = 0;
  nlohmann::json config;   // resolved
  nlohmann::json trainer;  // the trainer's state (best accuracy, times, last metrics line)
  LossWindow loss;
  // The arrays' shape, as read from a file (write_checkpoint takes them from the backend).
  int64_t workers = 0, dim = 0;
  int scalar_bytes = 0;
  bool momentum = false;
  uint64_t data_offset = 0;  // where W's first row begins in the file
};

// Writes the header of `meta` (step, config, trainer, loss window) and streams the backend's W
// and momentum after it.
void write_checkpoint(const std::string& path, const Checkpoint& meta, const Backend& backend);
// Checks the whole file (magic, version, header, sizes, the CRC in one streaming pass) and returns
// its header; refuses, naming the file and the problem: not a checkpoint, another version, a
// bad checksum, a truncated file.
Checkpoint read_checkpoint(const std::string& path);
// Streams W, the momentum and the loss window of a checkpoint read_checkpoint accepted into a
// backend of the same shape and precision.
void load_checkpoint(const std::string& path, const Checkpoint& meta, Backend& backend);

}  // namespace gossamer
