// The choice of micro-kernels for this CPU (under the ISA cap), and the in-cache rate of one.
#include "cpu_select.hpp"

#include <fmt/format.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <vector>

#include "moe_bench/aligned.hpp"
#include "moe_bench/roofline.hpp"
#include "moe_bench/sysinfo.hpp"

namespace moe_bench::cpu {
namespace {

// Rows per expert from which a bf16 layer is bound by compute rather than by reading weights.
constexpr double kComputeBoundRows = 16;

}  // namespace

bool has_avx512() { return cpu_features().has("avx512f"); }
bool has_avx512_bf16() {
  return has_avx512() && cpu_features().has("avx512bw") && cpu_features().has("avx512_bf16");
}
bool has_avx512_vnni() {
  const CpuFeatures& f = cpu_features();
  return has_avx512() && has_avx2() && f.has("avx512_vnni") && f.has("avx512bw") &&
         f.has("avx512vl");
}
bool has_amx() { return amx_refusal().empty(); }

// "this CPU has no X", or, where the CPU has it but a cap hides it, that the cap does.
std::string no_isa(std::string_view what) {
  if (max_isa()) return fmt::format("no {} under the cap ({})", what, isa_cap_note());
  return fmt::format("this CPU has no {}", what);
}

bool has_avx2() {
  return cpu_features().has("avx2") && cpu_features().has("fma") && cpu_features().has("f16c");
}

// The micro-kernels for a dtype and case on this CPU, and why. bf16 takes the vdpbf16ps pairs
// where the CPU has them, unless the case is bound by compute and vdpbf16ps is measured slower
// than FP32 FMAs here (Intel Xeons run it at half their FMA rate; AMD Zen 4/5 at twice): then
// the widening AVX-512 kernels, which read the same bf16 weights and multiply at the FMA rate.
// Where the CPU has AMX, a compute-bound bf16 case takes the AMX kernels when their in-cache rate
// is measured above the widening kernels' (an Intel Xeon, 2 cores: 3x at workload A, 512 tokens).
const IsaKernels* best_isa(Dtype dtype, double rows_per_expert, std::string& why,
                           WeightFormat weights) {
  // q4 with bf16 activations: its nibbles widen to exact bf16 pairs in fewer instructions than
  // to FP32, and one vdpbf16ps takes two rows of the reduction where FP32 takes two FMAs. Taken
  // where vdpbf16ps runs at least at the FMA rate (AMD Zen 4/5; measured faster on a Zen 4); on
  // Intel Xeons it runs at half and the pair kernels are not measured there against the FP32 ones.
  // Where the CPU has VNNI, `cpu` does not ask: it runs quantized bf16 layers on the integer
  // kernels (CpuKernel::a16(), cpu_moe.cpp), faster again on a Zen 4.
  if (dtype == Dtype::kBF16 && weights == WeightFormat::kQ4 && has_avx512_bf16()) {
    const double ratio = dpbf16_over_fma_rate();
    if (ratio >= 1.0) {
      why = fmt::format("q4 widened to bf16 pairs; vdpbf16ps measured at {:.2f}x the FMA rate here",
                        ratio);
      return &avx512_bf16_kernels();
    }
    why = fmt::format("q4 widened to FP32; vdpbf16ps measured at {:.2f}x the FMA rate here", ratio);
  }
  // Other quantized weights are widened to FP32 in registers: the FP32 kernels of the widest ISA.
  const bool quantized = weights != WeightFormat::kSame;
  if (dtype == Dtype::kBF16 && has_avx512_bf16() && !quantized) {
    if (rows_per_expert < kComputeBoundRows) {
      why = fmt::format("{:.3g} rows per expert: bound by reading weights", rows_per_expert);
      return &avx512_bf16_kernels();
    }
    std::string amx_note;
    if (has_amx()) {
      const double amx = amx_over_fma_kernel_rate();
      if (amx > 1.0) {
        why = fmt::format(
            "{:.3g} rows per expert, AMX kernels measured at {:.2f}x the AVX-512 "
            "FP32 kernels here",
            rows_per_expert, amx);
        return &amx_kernels();
      }
      amx_note = fmt::format("; AMX kernels at {:.2f}x the FP32 kernels", amx);
    }
    const double ratio = dpbf16_over_fma_rate();
    why = fmt::format("{:.3g} rows per expert, vdpbf16ps measured at {:.2f}x the FMA rate here{}",
                      rows_per_expert, ratio, amx_note);
    if (ratio >= 1.0) return &avx512_bf16_kernels();
  }
  if (has_avx512()) return &avx512_kernels();
  if (has_avx2()) return &avx2_kernels();
  return &generic_kernels();
}

double amx_over_fma_kernel_rate() {
  if (!has_amx() || !has_avx512()) return 0.0;
  // One thread, once per process (about 0.1 s): both kernel sets exist wherever AMX does.
  static const double kRatio =
      in_cache_gflops(amx_kernels(), 1) / in_cache_gflops(avx512_kernels(), 1);
  return kRatio;
}

double in_cache_gflops(const IsaKernels& isa, int threads) {
  // One row block against one gate/up panel over d = 128: the panel (128 x 2L floats, 16 KiB
  // at 16 lanes) and the block stay in L1. Raw sums out (acc_out), so no activation is timed.
  constexpr int64_t kD = 128, kCalls = 20'000;
  const int64_t L2 = 2 * isa.lanes, R = isa.rows;
  const double flops = 2.0 * static_cast<double>(R * L2 * kD) * kCalls;
  double best = 0;
  for (int pass = 0; pass < 5; ++pass) {
    double slowest = 0;
#pragma omp parallel num_threads(threads) reduction(max : slowest)
    {
      Aligned<float> xp, wp, acc, hp;
      xp.resize(kD * R);
      wp.resize(kD * L2);
      acc.resize(R * L2);
      hp.resize(R * L2);
      for (int64_t i = 0; i < kD * R; ++i) xp.data()[i] = 1e-3f * static_cast<float>(i % 7);
      for (int64_t i = 0; i < kD * L2; ++i) wp.data()[i] = 1e-3f * static_cast<float>(i % 5);
      isa.gate_up(xp.data(), wp.data(), kD, R, hp.data(), 0, isa.lanes, Act::kSwiglu, nullptr,
                  acc.data(), Storage::kF32, {});
#pragma omp barrier
      const auto start = std::chrono::steady_clock::now();
      for (int64_t c = 0; c < kCalls; ++c) {
        isa.gate_up(xp.data(), wp.data(), kD, R, hp.data(), 0, isa.lanes, Act::kSwiglu, acc.data(),
                    acc.data(), Storage::kF32, {});
      }
      slowest = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      volatile float sink = acc.data()[0];
      (void)sink;
    }
    best = std::max(best, flops * threads / slowest * 1e-9);
  }
  return best;
}

}  // namespace moe_bench::cpu
