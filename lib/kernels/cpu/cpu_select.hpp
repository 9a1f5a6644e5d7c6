#pragma once

#include <string>
#include <string_view>

#include "cpu_isa.hpp"
#include "moe_bench/dtype.hpp"
#include "moe_bench/shape.hpp"
#include "moe_bench/sysinfo.hpp"

namespace moe_bench::cpu {

// Which micro-kernels this CPU can run, under the ISA cap in force (cpu_features()): looked up
// on every call, since a cap can change between kernels (tests run under every cap).
bool has_avx2();
bool has_avx512();
bool has_avx512_bf16();
/// AVX-512 VNNI (vpdpbusd) with BW and VL: the a8 kernels' integer dot products.
bool has_avx512_vnni();
/// Whether the AMX kernels can run here (moe_bench::amx_refusal() says why not).
bool has_amx();
/// "this CPU has no X", or, where a cap hides it, that the cap does.
std::string no_isa(std::string_view what);

/// The micro-kernels `cpu` runs for a dtype and case on this CPU, and why (`why`, empty when
/// obvious). Quantized weights take the FP32 kernels of the widest ISA, but q4 with bf16
/// activations the vdpbf16ps kernels where the CPU has them.
const IsaKernels* best_isa(Dtype dtype, double rows_per_expert, std::string& why,
                           WeightFormat weights = WeightFormat::kSame);

/// The FP32 FLOP rate of a gate/up micro-kernel of `isa` on operands that stay in L1, on every
/// thread at once (best of several passes): what the kernel's arithmetic alone reaches here, which
/// the measured FMA peak of the same ISA must not be below.
double in_cache_gflops(const IsaKernels& isa, int threads);
/// The in-cache rate of the AMX kernels over the AVX-512 FP32 kernels on one thread, measured
/// once per process; 0 where AMX (or AVX-512) is not usable.
double amx_over_fma_kernel_rate();

}  // namespace moe_bench::cpu
