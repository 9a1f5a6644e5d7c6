#include "moe_bench/cuda_info.hpp"

namespace moe_bench {

CudaInfo cuda_info() {
  return {false, false, "built without CUDA (no nvcc found at configure time)"};
}

}  // namespace moe_bench
