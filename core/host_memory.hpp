// Checks of host allocations whose size is known before they are made: a run that cannot fit
// is refused with the amount, what it is for and the knob that lowers it, instead of ending in
// "std::bad_alloc" (or in the kernel's OOM killer) part-way.
#pragma once
#include <string>

namespace gossamer {

// Bytes the process can still allocate: MemAvailable of /proc/meminfo, and no more than what
// an address-space limit (ulimit -v) leaves; a very large number where neither is known.
double host_memory_available();

// Throws runtime_error "WHAT needs X GiB of host memory, Y GiB are available; lower KNOB"
// when bytes > host_memory_available().
void check_host_memory(double bytes, const std::string& what, const std::string& knob);

}  // namespace gossamer
