#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "moe_bench/kernel.hpp"
#include "moe_bench/result.hpp"

namespace moe_bench {

struct HarnessOptions {
  int reps = 20;                    ///< timed calls per result
  int warmup = 1;                   ///< untimed calls before them
  double oracle_flop_budget = 2e9;  ///< FP64 oracle work per case (token sample beyond it)
};

/// Called before each step with (step, total steps, what).
using ProgressFn = std::function<void(int64_t, int64_t, const std::string&)>;

/// Times `reps` calls of `run` after `warmup` untimed ones, cycling through `layers` weight sets;
/// returns seconds per call. The seam the statistics engine grows from.
std::vector<double> time_calls(Kernel& kernel, int64_t layers, int reps, int warmup);

/// Runs every implementation on every case: generate data, check against the oracle, time.
/// A result that fails correctness is reported as failed and not timed.
std::vector<Result> run_cases(const std::vector<Case>& cases, const std::vector<std::string>& impls,
                              const HarnessOptions& options, const ProgressFn& progress = {});

}  // namespace moe_bench
