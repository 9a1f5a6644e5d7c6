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
/// bf16 on AMX tiles (unavailable, with the reason, without AMX or without Linux's permission).
std::unique_ptr<Kernel> make_amx_kernel();
/// The AMX kernels over a software model of the tiles: for tests on CPUs without AMX; not
/// registered (slow, and not a measurement of anything).
std::unique_ptr<Kernel> make_amx_model_kernel();
std::unique_ptr<Kernel> make_generic_kernel();

}  // namespace moe_bench::cpu
