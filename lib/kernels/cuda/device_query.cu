#include <cuda_runtime.h>

#include <string>

#include "moe_bench/cuda_info.hpp"

namespace moe_bench {

CudaInfo cuda_info() {
  CudaInfo info;
  info.compiled = true;
  int runtime = 0;
  cudaRuntimeGetVersion(&runtime);
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    info.summary = std::string("no CUDA device (") +
                   (err != cudaSuccess ? cudaGetErrorString(err) : "no devices found") + ")";
    return info;
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  int driver = 0;
  cudaDriverGetVersion(&driver);
  info.available = true;
  info.summary = std::string(prop.name) + ", sm_" + std::to_string(prop.major) +
                 std::to_string(prop.minor) + ", " + std::to_string(prop.multiProcessorCount) +
                 " SMs, " + std::to_string(prop.totalGlobalMem >> 20) + " MiB, driver " +
                 std::to_string(driver) + ", runtime " + std::to_string(runtime);
  return info;
}

}  // namespace moe_bench
