#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace moe_bench {

/// Where each expert of an expert-parallel layer lives: the ranks holding a copy of it. A token's
/// assignment to an expert with several copies goes to copy (global token index mod copies), so
/// a replicated expert's tokens are split evenly between its copies.
struct Placement {
  std::string policy;  ///< contiguous, round-robin or load-aware
  int ranks = 1;
  std::vector<std::vector<int>> owners;  ///< [E]: the ranks holding each expert, first the home
  int replicas = 0;                      ///< extra copies beyond one per expert

  /// The rank that computes global token `token`'s assignment to `expert`.
  int rank_for(int32_t expert, int64_t token) const {
    const auto& o = owners[static_cast<size_t>(expert)];
    return o[static_cast<size_t>(token % static_cast<int64_t>(o.size()))];
  }
  /// Expected assignments per rank for a load per expert (tokens split between copies).
  std::vector<double> rank_load(const std::vector<int64_t>& expert_load) const;
};

/// Places `experts` experts on `ranks` ranks. contiguous: blocks of E/N experts in order (the
/// remainder to the first ranks); round-robin: expert e on rank e mod N; load-aware: the
/// `replicas` most loaded experts of `expert_load` (a calibration batch) get a second copy, then
/// every copy, heaviest first, goes to the least loaded rank that holds no copy of it yet.
/// Throws UsageError for an unknown policy or replicas < 0.
Placement place_experts(std::string_view policy, int64_t experts, int ranks,
                        const std::vector<int64_t>& expert_load, int replicas);

/// max / mean of a load per rank (1 when balanced; 0 when there is no load).
double max_over_mean(const std::vector<double>& load);

}  // namespace moe_bench
