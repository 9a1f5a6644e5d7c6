#pragma once

#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "moe_bench/harness.hpp"
#include "moe_bench/result.hpp"
#include "moe_bench/sysinfo.hpp"

namespace moe_bench {

/// The CPUs a claim was measured on and is stated for.
enum class MachineClass {
  kAvx2,         ///< x86-64 with AVX2 and FMA (Intel since Haswell, AMD since Zen)
  kAvx512,       ///< x86-64 with AVX-512 (AMD Zen 4/5, Intel Xeon since Skylake)
  kAvx512Bf16,   ///< AVX512-BF16 (AMD Zen 4/5; Intel Xeons since Cooper Lake)
  kAmx,          ///< AMX-BF16 tiles (Intel Xeons since Sapphire Rapids)
  kNvidiaHopper  ///< an NVIDIA Hopper GPU (sm_90: H100, H200) that the device implementations use
};
/// How the README names a machine class ("CPUs with AVX-512").
std::string_view to_string(MachineClass m);
/// Why a CPU with these features is outside the class, or nullopt when it is inside.
std::optional<std::string> outside_class(MachineClass m, const CpuFeatures& cpu);
/// The same with the GPU the device implementations use (nullopt: none usable here).
std::optional<std::string> outside_class(MachineClass m, const CpuFeatures& cpu,
                                         const std::optional<SystemInfo::CudaDevice>& gpu);

/// A performance claim the README makes, checked by `validate`: implementation `a` is faster than
/// `b` with confidence on a standard workload case, on the machines of its class (skipped, with
/// the reason, on others).
struct Claim {
  std::string text;  ///< exactly as the README states it
  std::string workload;
  int64_t tokens = 0;
  std::string routing = "uniform";
  std::string a, b;
  bool quick = false;  ///< also checked by --quick
  std::string dtype = "f32";
  MachineClass machines = MachineClass::kAvx2;
  /// The dtype of `b`'s side where it differs (a claim between two dtypes of one
  /// implementation, e.g. bf16 decode against f32 decode); empty: `dtype`.
  std::string b_dtype;
  /// The weight formats (Shape::weights) of `a`'s and `b`'s sides: a claim between two formats
  /// of one implementation (int8 decode against bf16 decode) names both.
  std::string weights = "same", b_weights = "same";

  /// Whether validate times the two sides itself, side by side, rather than finding them among
  /// its standard cases: two cases (other dtype or weights), or quantized weights, which no
  /// standard case holds.
  bool across_cases() const {
    return !b_dtype.empty() || weights != b_weights || weights != "same";
  }
};
std::span<const Claim> readme_claims();

/// The rates of validate's serving check and what was met at them. cpu and blas serve the same
/// rates, fractions of cpu's measured capacity `cap`; blas is served at each and its highest
/// within the bound found; where it met every one (cap measured in a busy moment), the rates go
/// on past cap, blas served at each, until it misses. cpu is then served at the rates above
/// blas's highest, from the lowest, until one meets the bound. `meets(impl, rate)`: impl 0 is
/// cpu, 1 blas; whether it met the bound, or nullopt when serving failed (the ladder stops).
struct ServingLadder {
  std::vector<double> rates;
  double blas_best = 0;  ///< blas's highest rate within the bound (0: none)
  double cpu_rate = 0;   ///< the lowest rate above blas_best where cpu met it (0: none)
  bool failed = false;   ///< a serve failed (nullopt)
};
ServingLadder serving_ladder(double cap,
                             const std::function<std::optional<bool>(int, double)>& meets);

enum class ValidateLevel { kQuick, kDefault, kFull };

/// Runs the checks of `validate`: correctness grid, standard workloads timed, README claims.
/// Each check line is reported through `on_check` as it finishes and stored in report.checks.
/// Every implementation of `registry` is checked for correctness.
void run_validate(const Registry& registry, ValidateLevel level, Report& report,
                  const std::function<void(const CheckLine&)>& on_check,
                  const ProgressFn& progress = {});

}  // namespace moe_bench
