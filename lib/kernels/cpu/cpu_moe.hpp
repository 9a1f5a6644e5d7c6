#pragma once

#include <memory>

#include "moe_bench/kernel.hpp"

namespace moe_bench::cpu {

/// The optimized CPU implementation on the best instruction set this CPU has.
std::unique_ptr<Kernel> make_kernel();
/// The same, forced to one instruction set (unavailable where the CPU lacks it).
std::unique_ptr<Kernel> make_avx512_kernel();
std::unique_ptr<Kernel> make_avx512_bf16_kernel();
std::unique_ptr<Kernel> make_avx2_kernel();
std::unique_ptr<Kernel> make_generic_kernel();

}  // namespace moe_bench::cpu
