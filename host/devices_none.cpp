#include "gossamer/devices.hpp"

namespace gossamer {

DeviceList list_devices() {
  return {{}, "this gossamer was built without CUDA (no nvcc found, or -DGOSSAMER_CUDA=OFF)"};
}

}  // namespace gossamer
