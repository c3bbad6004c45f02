// OpenMP loops whose body may throw (an allocation, a size check). An exception must not leave
// a parallel region (the runtime would call std::terminate: "terminate called after throwing an
// instance of 'std::bad_alloc'", exit 134); each is caught where it is thrown, the others stop
// early, and the first is rethrown after the loop, where the CLI turns it into a message.
#pragma once
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>

namespace gossamer {

enum class Schedule { Static, Dynamic };

template <class F>
void parallel_for(int64_t n, F&& body, Schedule schedule = Schedule::Static) {
  std::exception_ptr first;
  std::mutex guard;
  std::atomic<bool> failed{false};
  const auto run = [&](int64_t i) {
    if (failed.load(std::memory_order_relaxed)) return;
    try {
      body(i);
    } catch (...) {
      const std::lock_guard<std::mutex> lock(guard);
      if (!first) first = std::current_exception();
      failed = true;
    }
  };
  if (schedule == Schedule::Dynamic) {
#pragma omp parallel for schedule(dynamic)
    for (int64_t i = 0; i < n; ++i) run(i);
  } else {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) run(i);
  }
  if (first) std::rethrow_exception(first);
}

}  // namespace gossamer
