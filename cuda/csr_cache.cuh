// Mixing matrices on the device, cached by content: a static topology uploads its CSR once,
// a time-varying one cycles through a few cached phases, a shuffled one uploads the step's
// CSR (and only it) each step: a time-varying P never re-uploads more than the step's CSR.
#pragma once
#include <unordered_map>
#include <vector>

#include "device_array.cuh"
#include "gossamer/topology.hpp"

namespace gossamer {

// A matrix on the device, with the host copy it was made from (the collision check, and the
// source of the asynchronous upload, which must outlive the copy).
struct DeviceCsr {
  Csr host;
  std::vector<float> val32;
  DeviceArray<int> row_ptr, col;
  DeviceArray<float> val;
};

class DeviceCsrCache {
 public:
  // The device copy of `c`, uploaded on `s` when new. When the cache is full it is emptied
  // after `s` has drained (queued steps may still read the matrices about to be freed).
  const DeviceCsr& get(const Csr& c, cudaStream_t s);

 private:
  static constexpr size_t kEntries = 64;
  std::unordered_map<uint64_t, DeviceCsr> m_entries;
};

}  // namespace gossamer
