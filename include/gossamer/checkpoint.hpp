// Checkpoints: everything to continue a run bit for bit, in a versioned binary file with
// a CRC-32 checksum, written to a temporary file and renamed (a crash never leaves half a
// checkpoint as the latest).
//
// Layout (little-endian):
//   "GOSSCKPT"  u32 version  u64 n  n bytes of JSON header
//   u64 count  count f64 weights    u64 count  count f64 momentum
//   u32 CRC-32 (zlib) of every byte before it
// The header holds step, workers, dim, seed, config_hash, the resolved config, the
// training-loss window, and the trainer's own state.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "gossamer/backend.hpp"

namespace gossamer {

inline constexpr uint32_t kCheckpointVersion = 1;

struct Checkpoint {
  int64_t step = 0;
  nlohmann::json config;   // resolved
  nlohmann::json trainer;  // the trainer's state (best accuracy, times, last metrics line)
  BackendState state;
};

void write_checkpoint(const std::string& path, const Checkpoint& checkpoint);
// Refuses, naming the file and the problem: not a checkpoint, another version, a bad
// checksum, a truncated file.
Checkpoint read_checkpoint(const std::string& path);

}  // namespace gossamer
