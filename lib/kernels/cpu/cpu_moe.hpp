#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

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
/// The a8 variant, `cpu_w8a8`: int8 or q4 weights with each token's input row and each expert's
/// hidden row quantized to int8 (per-row dynamic scales), integer dot products.
std::unique_ptr<Kernel> make_a8_kernel();

/// What the last run of `cpu` (a kernel of the factories above, prepared and run) read of
/// `layer`'s weights: the router's matrix, then the packed weights and the scales of every expert
/// that received a row (and of the shared experts). Throws std::logic_error for another kernel.
std::vector<std::span<const char>> weights_read(const Kernel& cpu, int64_t layer);

/// A bound, not an MoE layer: reads what `cpu` reads of its weights in a forward (weights_read),
/// with the read ceiling's loops on the same threads, and nothing else (cpu_read.cpp).
std::unique_ptr<Kernel> make_read_floor_kernel();

}  // namespace moe_bench::cpu
