#pragma once

#include <functional>
#include <span>
#include <string>
#include <vector>

#include "moe_bench/harness.hpp"
#include "moe_bench/result.hpp"

namespace moe_bench {

/// A performance claim the README makes, checked by `validate`: implementation `a` is faster than
/// `b` with confidence on a standard workload case.
struct Claim {
  std::string text;  ///< exactly as the README states it
  std::string workload;
  int64_t tokens = 0;
  std::string routing = "uniform";
  std::string a, b;
  bool quick = false;  ///< also checked by --quick
  std::string dtype = "f32";
};
std::span<const Claim> readme_claims();

enum class ValidateLevel { kQuick, kDefault, kFull };

/// Runs the checks of `validate`: correctness grid, standard workloads timed, README claims.
/// Each check line is reported through `on_check` as it finishes and stored in report.checks.
/// Every implementation of `registry` is checked for correctness.
void run_validate(const Registry& registry, ValidateLevel level, Report& report,
                  const std::function<void(const CheckLine&)>& on_check,
                  const ProgressFn& progress = {});

}  // namespace moe_bench
