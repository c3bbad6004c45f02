// Per-element math that both the CPU backend and CUDA kernels compile: one definition.
#pragma once
#if defined(__CUDACC__)
#define GOSSAMER_HD __host__ __device__ __forceinline__
#else
#define GOSSAMER_HD inline
#endif

// Unroll the next loop in device code (the host compiler knows no such pragma).
#if defined(__CUDACC__)
#define GOSSAMER_UNROLL _Pragma("unroll")
#else
#define GOSSAMER_UNROLL
#endif
