// A device allocation that frees itself on every path, with copies to and from the host. Its
// synchronizing calls wait for another thread's stream capture to end (capture_lock.cuh).
#pragma once
#include <algorithm>
#include <utility>
#include <vector>

#include "capture_lock.cuh"
#include "cuda_check.cuh"

namespace gossamer {

template <class T>
class DeviceArray {
 public:
  DeviceArray() = default;
  explicit DeviceArray(size_t n) : m_n(n) {
    const DeviceCallLock lock;
    CUDA_CHECK(cudaMalloc(&m_ptr, std::max<size_t>(n, 1) * sizeof(T)));
  }
  explicit DeviceArray(const std::vector<T>& host) : DeviceArray(host.size()) {
    const DeviceCallLock lock;
    if (!host.empty())
      CUDA_CHECK(cudaMemcpy(m_ptr, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  }
  ~DeviceArray() {  // destructors only release; a failure here has no reader
    if (!m_ptr) return;
    const DeviceCallLock lock;
    cudaFree(m_ptr);
  }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  DeviceArray(DeviceArray&& o) noexcept { swap(o); }
  DeviceArray& operator=(DeviceArray&& o) noexcept {
    swap(o);
    return *this;
  }
  void swap(DeviceArray& o) noexcept {
    std::swap(m_ptr, o.m_ptr);
    std::swap(m_n, o.m_n);
  }

  T* get() const { return m_ptr; }
  size_t size() const { return m_n; }
  bool empty() const { return m_n == 0; }
  // Every byte 0xFF: an unwritten float reads NaN, an unwritten index -1.
  void poison() {
    const DeviceCallLock lock;
    CUDA_CHECK(cudaMemset(m_ptr, 0xFF, m_n * sizeof(T)));
  }
  void zero(cudaStream_t s = nullptr) { CUDA_CHECK(cudaMemsetAsync(m_ptr, 0, m_n * sizeof(T), s)); }
  std::vector<T> fetch() const {
    std::vector<T> out(m_n);
    const DeviceCallLock lock;
    if (m_n) CUDA_CHECK(cudaMemcpy(out.data(), m_ptr, m_n * sizeof(T), cudaMemcpyDeviceToHost));
    return out;
  }

 private:
  T* m_ptr = nullptr;
  size_t m_n = 0;
};

// Page-locked host memory (cudaMallocHost): copies from and to it run at the bus's full rate and
// asynchronously. Used for the checkpoint stream's chunks.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  explicit PinnedBuffer(size_t bytes) : m_bytes(bytes) {
    const DeviceCallLock lock;
    CUDA_CHECK(cudaMallocHost(&m_ptr, std::max<size_t>(bytes, 1)));
  }
  ~PinnedBuffer() {
    if (!m_ptr) return;
    const DeviceCallLock lock;
    cudaFreeHost(m_ptr);
  }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  char* get() const { return static_cast<char*>(m_ptr); }
  size_t size() const { return m_bytes; }

 private:
  void* m_ptr = nullptr;
  size_t m_bytes = 0;
};

}  // namespace gossamer
