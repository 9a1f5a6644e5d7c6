// AVX-512 micro-kernels: 16 lanes, 14-row blocks (28 accumulators of 32 registers; 14 measured
// 5-8% faster than 12 on the prefill workloads). Compiled
// with -mavx512f -mfma; only called when the CPU has AVX-512F.
#include <immintrin.h>

#include "cpu_isa.hpp"

namespace moe_bench::cpu {
namespace avx512 {

#include "avx512_vec.hpp"

constexpr int kRows = 14;
#include "kernel_body.hpp"

}  // namespace avx512

const IsaKernels& avx512_kernels() {
  static const IsaKernels kKernels{"avx512",        avx512::V::kLanes,      avx512::kRows,
                                   avx512::gate_up, avx512::down,           avx512::dot_rows,
                                   /*kpack=*/1,     /*bf16_only=*/false,
                                   /*kblock=*/1,    avx512::gate_up_panels, avx512::down_panels};
  return kKernels;
}

}  // namespace moe_bench::cpu
