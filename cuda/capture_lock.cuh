// Stream capture against the calls that synchronize the device, across the threads of one process
// (`gossamer sweep --jobs N` runs N CUDA backends in threads, on one GPU). A synchronizing call on
// one thread (cudaDeviceSynchronize, a synchronous cudaMemcpy or cudaMemset, cudaFree,
// cudaFreeHost; cudaMalloc and cuBLAS's handles with them, to be safe) can invalidate a stream
// capture in progress on another thread of the same device, cudaStreamCaptureModeThreadLocal
// notwithstanding: the capture then ends with cudaErrorStreamCaptureInvalidated, or the other
// call fails with cudaErrorStreamCaptureUnsupported. On an H200 a three-point `sweep --jobs 3`
// test failed so once and passed alone. A capture holds this lock alone (CaptureLock); those calls
// share it (DeviceCallLock): they wait for a capture to end and never for one another. The
// capturing thread takes no shared lock inside its own capture (it makes no such call there; the
// capture would refuse it), so a DeviceCallLock on that thread is a no-op rather than a deadlock.
#pragma once
#include <mutex>
#include <shared_mutex>

namespace gossamer {

inline std::shared_mutex& capture_mutex() {
  static std::shared_mutex m;
  return m;
}
inline thread_local bool t_capturing = false;  // this thread holds the CaptureLock

class DeviceCallLock {
 public:
  DeviceCallLock() {
    if (!t_capturing) m_lock = std::shared_lock<std::shared_mutex>(capture_mutex());
  }

 private:
  std::shared_lock<std::shared_mutex> m_lock;
};

class CaptureLock {
 public:
  CaptureLock() : m_lock(capture_mutex()) { t_capturing = true; }
  ~CaptureLock() { t_capturing = false; }
  CaptureLock(const CaptureLock&) = delete;
  CaptureLock& operator=(const CaptureLock&) = delete;

 private:
  std::unique_lock<std::shared_mutex> m_lock;
};

}  // namespace gossamer
