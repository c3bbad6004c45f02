// Per-element math that both the CPU backend and CUDA kernels compile: one definition.
#pragma once
#if defined(__CUDACC__)
#define GOSSAMER_HD __host__ __device__ __forceinline__
#else
#define GOSSAMER_HD inline
#endif
