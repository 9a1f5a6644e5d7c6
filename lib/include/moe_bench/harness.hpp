#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "moe_bench/kernel.hpp"
#include "moe_bench/result.hpp"

namespace moe_bench {

struct HarnessOptions {
  int reps = 20;                ///< at least this many samples per result
  double min_time_s = 0.5;      ///< and at least this much sampling per case
  double max_time_s = 30.0;     ///< but stop sampling a case after this long
  double min_sample_s = 0.005;  ///< inner repetitions make a sample at least this long
  int warmup = 1;               ///< untimed calls before calibration
  double settle_s = 0.003;      ///< pause before a sample whose implementation differs from
                                ///< the last one, so the last one's idle threads stop spinning
  CacheMode cache = CacheMode::kCold;
  uint64_t seed = 1;  ///< interleaving order and bootstrap
  /// Speed-ups are of each implementation over each of these present in a case.
  std::vector<std::string> baselines{"blas", "numpy", "torch", "ipex"};
  double oracle_flop_budget = 2e9;  ///< FP64 oracle work per case (token sample beyond it)
  /// Makes an implementation by name: the registry's `make` (tests substitute their own).
  std::function<std::unique_ptr<Kernel>(std::string_view)> make;
};

/// Called before each case with (case index, number of cases, what).
using ProgressFn = std::function<void(int64_t, int64_t, const std::string&)>;

constexpr int64_t kMinColdLayers = 2, kMaxColdLayers = 64;

/// Independent weight sets for cold-cache timing: enough that the weights one round of calls
/// touches exceed four times the last-level cache, at least 2 and at most 64, and bounded by
/// memory: all layers, with `copies` copies of each in the stored format (the implementations'
/// packed weights), and what the case holds once, within half of `available_bytes`. 1 when warm.
int64_t cold_layers(const Case& c, CacheMode mode, int64_t active_experts, int64_t llc_bytes,
                    int64_t available_bytes, int copies = 0);

/// The layers a case rotates through with these implementations (cold_layers with this machine's
/// cache and memory, the implementations' weight copies counted, the memory shared by
/// `processes` holding the case at once).
int64_t layers_for(const Case& c, const HarnessOptions& o, const std::vector<std::string>& impls,
                   int processes = 1);

/// Seconds per call of `reps` calls of `kernel`, rotating through `layers` from `next_layer`
/// (advanced): the device's time for device-timed implementations, the host clock otherwise.
double time_calls(Kernel& kernel, int64_t reps, int64_t layers, int64_t& next_layer);

/// Calls per sample so that a sample lasts at least `min_sample_s`, given one call's seconds.
int64_t inner_reps_for(double one_call_s, double min_sample_s);

/// Whether sampling goes on after `rounds` rounds and `elapsed` seconds: until both --reps
/// rounds and --min-time, but never past --max-time once a round is done.
bool keep_sampling(int64_t rounds, double elapsed, const HarnessOptions& o);

/// Recomputes every result's derived figures (roofline included) from its stats and the report's
/// peaks, e.g. after the peaks were measured again.
void refresh_derived(Report& report);

/// Asks the harness to stop after the current sample (from a SIGINT handler: async-safe).
void request_interrupt();
bool interrupt_requested();

/// Runs every implementation on every case: generate data, check each against the oracle, then
/// time them interleaved, a sample each in a seeded random order per round. A result that fails
/// correctness is reported as failed and not timed. Fills results, comparisons, interrupted.
void run_cases(const std::vector<Case>& cases, const std::vector<std::string>& impls,
               const HarnessOptions& options, Report& report, const ProgressFn& progress = {});

}  // namespace moe_bench
