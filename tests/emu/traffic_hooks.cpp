// The callbacks of GCC's kernel-address instrumentation (-fsanitize=kernel-address with
// asan-instrumentation-with-call-threshold=0), which the traced build of the CUDA part
// (tests/CMakeLists.txt, gossamer_cuda_traced) calls at every load and store: each passes its
// access to the traffic report (traffic.hpp) with its call site. Linked only into programs built
// from that instrumented copy; this file itself is not instrumented.
#include <cstddef>
#include <cstdint>

#include "traffic.hpp"

#define GOSSAMER_TRAFFIC_HOOKS(n)                                                              \
  void __asan_load##n##_noabort(void* p) {                                                     \
    gossamer_emu::trace_access(p, n, false, uintptr_t(__builtin_return_address(0)));           \
  }                                                                                            \
  void __asan_store##n##_noabort(void* p) {                                                    \
    gossamer_emu::trace_access(p, n, true, uintptr_t(__builtin_return_address(0)));            \
  }

extern "C" {
GOSSAMER_TRAFFIC_HOOKS(1)
GOSSAMER_TRAFFIC_HOOKS(2)
GOSSAMER_TRAFFIC_HOOKS(4)
GOSSAMER_TRAFFIC_HOOKS(8)
GOSSAMER_TRAFFIC_HOOKS(16)
void __asan_loadN_noabort(void* p, size_t n) {
  gossamer_emu::trace_access(p, uint32_t(n), false, uintptr_t(__builtin_return_address(0)));
}
void __asan_storeN_noabort(void* p, size_t n) {
  gossamer_emu::trace_access(p, uint32_t(n), true, uintptr_t(__builtin_return_address(0)));
}
void __asan_handle_no_return() {}
}
