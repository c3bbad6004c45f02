// The callbacks of GCC's ThreadSanitizer instrumentation (-fsanitize=thread at compile time, its
// runtime not linked), which the traced build of the CUDA part (tests/CMakeLists.txt,
// gossamer_cuda_traced) calls at every load and store: each passes its access to the traffic
// report (traffic.hpp) with its call site. ThreadSanitizer's, not AddressSanitizer's: the latter
// checks a read-modify-write (`y[i] += x[i]`) once, so its store would go uncounted. Linked only
// into programs built from that instrumented copy; this file itself is not instrumented.
#include <cstddef>
#include <cstdint>

#include "traffic.hpp"

#define GOSSAMER_TRAFFIC_PC uintptr_t(__builtin_return_address(0))
#define GOSSAMER_TRAFFIC_HOOKS(n)                                 \
  void __tsan_read##n(void* p) {                                  \
    gossamer_emu::trace_access(p, n, false, GOSSAMER_TRAFFIC_PC); \
  }                                                               \
  void __tsan_write##n(void* p) {                                 \
    gossamer_emu::trace_access(p, n, true, GOSSAMER_TRAFFIC_PC);  \
  }                                                               \
  void __tsan_unaligned_read##n(void* p) {                        \
    gossamer_emu::trace_access(p, n, false, GOSSAMER_TRAFFIC_PC); \
  }                                                               \
  void __tsan_unaligned_write##n(void* p) {                       \
    gossamer_emu::trace_access(p, n, true, GOSSAMER_TRAFFIC_PC);  \
  }

extern "C" {
GOSSAMER_TRAFFIC_HOOKS(1)
GOSSAMER_TRAFFIC_HOOKS(2)
GOSSAMER_TRAFFIC_HOOKS(4)
GOSSAMER_TRAFFIC_HOOKS(8)
GOSSAMER_TRAFFIC_HOOKS(16)
void __tsan_read_range(void* p, size_t n) {
  gossamer_emu::trace_access(p, uint32_t(n), false, GOSSAMER_TRAFFIC_PC);
}
void __tsan_write_range(void* p, size_t n) {
  gossamer_emu::trace_access(p, uint32_t(n), true, GOSSAMER_TRAFFIC_PC);
}
// What the instrumentation also calls, of no interest here.
void __tsan_init() {}
void __tsan_func_entry(void*) {}
void __tsan_func_exit() {}
void __tsan_vptr_update(void**, void*) {}
void __tsan_vptr_read(void**) {}
}
