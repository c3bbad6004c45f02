// GPUs visible to the CUDA runtime (cuda/devices.cu), or why none is.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace gossamer {

struct DeviceInfo {
  int index = 0;
  std::string name;
  uint64_t total_memory = 0;
  uint64_t free_memory = 0;
  int major = 0, minor = 0;  // compute capability
  int multiprocessors = 0;
};

struct DeviceList {
  std::vector<DeviceInfo> devices;
  std::string why_none;  // set when devices is empty: the runtime's reason, or "built without CUDA"
};

DeviceList list_devices();

}  // namespace gossamer
