#pragma once

#include <string>

namespace moe_bench {

/// CUDA devices as this build sees them.
struct CudaInfo {
  bool compiled = false;   ///< built with nvcc
  bool available = false;  ///< a usable device is present
  std::string summary;     ///< device name and versions, or why there is none
};

/// Queries the CUDA runtime once (a tiny CUDA translation unit when built with nvcc).
CudaInfo cuda_info();

}  // namespace moe_bench
