// The choice of micro-kernels for this CPU (under the ISA cap), and the in-cache rate of one.
#include "cpu_select.hpp"

#include <fmt/format.h>
#include <omp.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
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
bool has_avx512_bf16() { return has_avx512() && cpu_features().has("avx512_bf16"); }
// AMX needs the CPU's tiles and Linux's permission for their state (the XTILEDATA feature is
// off until a process asks for it). The permission is asked once; empty when usable, else why
// not. The features are looked up on every call: a cap (--max-isa) can change them.
std::string amx_refusal() {
  if (!cpu_features().has("amx_tile") || !cpu_features().has("amx_bf16")) {
    return max_isa() && host_cpu_features().has("amx_bf16")
               ? std::string("AMX is above the cap (") + isa_cap_note() + ")"
               : std::string("this CPU has no AMX (amx_tile and amx_bf16)");
  }
  static const std::string kDenied = [] {
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0) {
      return fmt::format("Linux refused the AMX tile state (arch_prctl ARCH_REQ_XCOMP_PERM: {})",
                         std::strerror(errno));
    }
    return std::string();
  }();
  return kDenied;
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
const IsaKernels* best_isa(Dtype dtype, double rows_per_expert, std::string& why, bool quantized) {
  // The AMX kernels (cpu_amx) are not chosen here: they have not run on an AMX CPU yet, and the
  // choice is to be made by a measured rate (issue 12), not by the feature flag.
  // Quantized weights are widened to FP32 in registers: the FP32 kernels of the widest ISA.
  if (dtype == Dtype::kBF16 && has_avx512_bf16() && !quantized) {
    if (rows_per_expert < kComputeBoundRows) {
      why = fmt::format("{:.3g} rows per expert: bound by reading weights", rows_per_expert);
      return &avx512_bf16_kernels();
    }
    const double ratio = dpbf16_over_fma_rate();
    why = fmt::format("{:.3g} rows per expert, vdpbf16ps measured at {:.2f}x the FMA rate here",
                      rows_per_expert, ratio);
    if (ratio >= 1.0) return &avx512_bf16_kernels();
  }
  if (has_avx512()) return &avx512_kernels();
  if (has_avx2()) return &avx2_kernels();
  return &generic_kernels();
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
