#include "csr_cache.cuh"

namespace gossamer {
namespace {

uint64_t csr_hash(const Csr& c) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  auto mix = [&h](const void* p, size_t n) {
    const auto* b = static_cast<const unsigned char*>(p);
    for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  };
  mix(&c.n, sizeof c.n);
  mix(c.row_ptr.data(), c.row_ptr.size() * sizeof(int));
  mix(c.col.data(), c.col.size() * sizeof(int));
  mix(c.val.data(), c.val.size() * sizeof(double));
  return h;
}

}  // namespace

const DeviceCsr& DeviceCsrCache::get(const Csr& c, cudaStream_t s) {
  const uint64_t key = csr_hash(c);
  auto it = m_entries.find(key);
  if (it != m_entries.end() && it->second.host == c)
    return it->second;
  if (m_entries.size() >= kEntries || it != m_entries.end()) {
    CUDA_CHECK(cudaStreamSynchronize(s));
    m_entries.clear();
  }
  DeviceCsr& e = m_entries[key];
  e.host = c;
  e.val32.assign(c.val.begin(), c.val.end());
  e.row_ptr = DeviceArray<int>(c.row_ptr.size());
  e.col = DeviceArray<int>(std::max<size_t>(c.col.size(), 1));
  e.val = DeviceArray<float>(std::max<size_t>(c.val.size(), 1));
  CUDA_CHECK(cudaMemcpyAsync(e.row_ptr.get(), e.host.row_ptr.data(), c.row_ptr.size() * sizeof(int),
                             cudaMemcpyHostToDevice, s));
  CUDA_CHECK(cudaMemcpyAsync(e.col.get(), e.host.col.data(), c.col.size() * sizeof(int),
                             cudaMemcpyHostToDevice, s));
  CUDA_CHECK(cudaMemcpyAsync(e.val.get(), e.val32.data(), c.val.size() * sizeof(float),
                             cudaMemcpyHostToDevice, s));
  return e;
}

}  // namespace gossamer
