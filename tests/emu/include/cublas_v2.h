// The cuBLAS names the emulated sources mention (cuda_runtime.h says why); gemm.cpp implements
// gossamer's Gemm without cuBLAS.
#pragma once

enum cublasStatus_t { CUBLAS_STATUS_SUCCESS = 0, CUBLAS_STATUS_INVALID_VALUE = 7 };
struct cublasContext;
using cublasHandle_t = cublasContext*;
const char* cublasGetStatusName(cublasStatus_t s);
const char* cublasGetStatusString(cublasStatus_t s);
