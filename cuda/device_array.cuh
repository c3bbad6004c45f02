// A device allocation that frees itself on every path, with copies to and from the host.
#pragma once
#include <algorithm>
#include <vector>

#include "cuda_check.cuh"

namespace gossamer {

template <class T>
class DeviceArray {
 public:
  explicit DeviceArray(size_t n) : m_n(n) {
    CUDA_CHECK(cudaMalloc(&m_ptr, std::max<size_t>(n, 1) * sizeof(T)));
  }
  explicit DeviceArray(const std::vector<T>& host) : DeviceArray(host.size()) {
    if (!host.empty())
      CUDA_CHECK(cudaMemcpy(m_ptr, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  }
  ~DeviceArray() { cudaFree(m_ptr); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;

  T* get() const { return m_ptr; }
  // Every byte 0xFF: an unwritten float reads NaN, an unwritten index -1.
  void poison() { CUDA_CHECK(cudaMemset(m_ptr, 0xFF, m_n * sizeof(T))); }
  std::vector<T> fetch() const {
    std::vector<T> out(m_n);
    if (m_n) CUDA_CHECK(cudaMemcpy(out.data(), m_ptr, m_n * sizeof(T), cudaMemcpyDeviceToHost));
    return out;
  }

 private:
  T* m_ptr = nullptr;
  size_t m_n = 0;
};

}  // namespace gossamer
