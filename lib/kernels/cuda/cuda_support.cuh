// What every CUDA translation unit of the engines shares: error checks, device buffers, the
// element types, stage timing by events and the device-memory check.
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <type_traits>
#include <vector>

#include "cuda_engine.hpp"
#include "host_pack.hpp"

// Included only by the engine translation units (*.cu here); internal linkage in each.
namespace moe_bench::cuda {
namespace {

void check(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return;
  if (err == cudaErrorMemoryAllocation) {
    throw DeviceError(std::string("CUDA out of memory in ") + what);
  }
  throw DeviceError(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(err));
}

void check_blas(cublasStatus_t st, const char* what) {
  if (st != CUBLAS_STATUS_SUCCESS) {
    throw DeviceError(std::string("cuBLAS error ") + std::to_string(static_cast<int>(st)) + " in " +
                      what);
  }
}

// A launch that failed to start is reported with the kernel's name.
void check_launch(const char* what) { check(cudaGetLastError(), what); }

double gib(double bytes) { return bytes / double(1 << 30); }

template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t n) { resize(n); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : p_(o.p_), n_(o.n_) { o.p_ = nullptr; }
  ~DeviceBuffer() {
    if (p_ != nullptr) cudaFree(p_);
  }
  void resize(size_t n) {
    if (p_ != nullptr) cudaFree(p_);
    p_ = nullptr;
    n_ = n;
    check(cudaMalloc(&p_, std::max<size_t>(n, 1) * sizeof(T)), "cudaMalloc");
    check(cudaMemset(p_, 0, std::max<size_t>(n, 1) * sizeof(T)), "cudaMemset");
  }
  void upload(const std::vector<T>& host) {
    check(cudaMemcpy(p_, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), "upload");
  }
  T* get() const { return p_; }
  size_t size() const { return n_; }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

template <typename T>
__host__ __device__ inline T to_elem(float v) {
  if constexpr (std::is_same_v<T, float>) {
    return v;
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __float2bfloat16_rn(v);
  } else {
    return __float2half_rn(v);
  }
}

__device__ inline float round_elem(float v, int elem) {
  if (elem == 1) return __bfloat162float(__float2bfloat16_rn(v));
  if (elem == 2) return __half2float(__float2half_rn(v));
  return v;
}

template <typename T>
cudaDataType_t blas_type() {
  if constexpr (std::is_same_v<T, float>) {
    return CUDA_R_32F;
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return CUDA_R_16BF;
  } else {
    return CUDA_R_16F;
  }
}

unsigned blocks_for(int64_t n, int threads) {
  return static_cast<unsigned>((n + threads - 1) / threads);
}

// Events around each stage; elapsed times are collected after the run's last event completed.
class StageClock {
 public:
  explicit StageClock(std::vector<std::string> names) : names_(std::move(names)) {
    events_.resize(names_.size() + 1);
    for (auto& e : events_) check(cudaEventCreate(&e), "cudaEventCreate");
    seconds_.assign(names_.size(), 0.0);
  }
  ~StageClock() {
    for (auto& e : events_) cudaEventDestroy(e);
  }
  void mark(size_t i, cudaStream_t stream = nullptr) {
    check(cudaEventRecord(events_[i], stream), "cudaEventRecord");
  }
  void finish() {
    check(cudaEventSynchronize(events_.back()), "a MoE forward on the device");
    check(cudaGetLastError(), "a MoE forward on the device");
    for (size_t i = 0; i < names_.size(); ++i) {
      float ms = 0;
      check(cudaEventElapsedTime(&ms, events_[i], events_[i + 1]), "cudaEventElapsedTime");
      seconds_[i] += ms * 1e-3;
      pending_ += ms * 1e-3;
    }
  }
  double take() {
    const double s = pending_;
    pending_ = 0;
    return s;
  }
  std::vector<std::pair<std::string, double>> stages() const {
    std::vector<std::pair<std::string, double>> out;
    for (size_t i = 0; i < names_.size(); ++i) out.emplace_back(names_[i], seconds_[i]);
    return out;
  }
  void reset() { std::fill(seconds_.begin(), seconds_.end(), 0.0); }

 private:
  std::vector<std::string> names_;
  std::vector<cudaEvent_t> events_;
  std::vector<double> seconds_;
  double pending_ = 0;
};

void check_fits(double need_bytes) {
  size_t free = 0, total = 0;
  check(cudaMemGetInfo(&free, &total), "cudaMemGetInfo");
  if (need_bytes > 0.95 * static_cast<double>(free)) {
    char msg[256];
    std::snprintf(msg, sizeof msg,
                  "out of device memory: this case needs %.2f GiB on the device, %.2f GiB of "
                  "%.2f GiB is free",
                  gib(need_bytes), gib(static_cast<double>(free)), gib(static_cast<double>(total)));
    throw DeviceError(msg);
  }
}

}  // namespace
}  // namespace moe_bench::cuda
