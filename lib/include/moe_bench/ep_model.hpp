#pragma once

#include <span>
#include <string>
#include <vector>

#include "moe_bench/result.hpp"

// The expert-parallel cost model of docs/ep.md, as scripts/ep-model.py calibrates it on the 1-
// and 2-rank runs of a case and saves it (--save): `moe-bench run --ep N --ep-model FILE` puts
// the model's step time for its own placement and counts in the result's `model_predicted_s`.
namespace moe_bench {

/// The calibration of a family of cases: what the constants depend on (the layer's shape and
/// dtype, tokens and threads per rank; not routing, capacity or placement, which change only the
/// rows, experts and bytes each rank has), and the constants.
struct EpCalibration {
  std::string preset, activation, dtype;
  int64_t experts = 0, top_k = 0, d_model = 0, d_ff = 0, shared_experts = 0, d_ff_shared = 0;
  int64_t tokens_per_rank = 0;
  int threads_per_rank = 1;
  double overhead_s = 0;  ///< route, packing, unpacking and summing on one rank
  double row_s = 0;       ///< compute per expert row
  double expert_s = 0;    ///< compute per distinct expert (streaming its weights)
  double message_s = 0;   ///< per message of an exchange
  double byte_s = 0;      ///< per byte a rank sends (0: the exchanges showed no size dependence)
};

/// Reads a calibration file; a missing, unreadable or malformed one is a UsageError naming it.
std::vector<EpCalibration> load_ep_model(const std::string& path);

/// The calibration of this case (tokens and threads per rank from `ep`), or null.
const EpCalibration* find_calibration(const std::vector<EpCalibration>& model, const Case& c,
                                      const EpInfo& ep);

/// When the last of `works` (rank r's seconds alone on `threads` cores) ends with the ranks bound
/// round-robin to slots of `threads` cores (rank r on slot r mod (cores / threads), as
/// `mpirun --bind-to core:overload-allowed --map-by core` places one-thread ranks) and the ranks
/// of a slot taking turns on it: the busiest slot's total.
double bound_finish_s(std::span<const double> works, int cores, int threads);

/// The modelled step: bound(overhead + row_s x rows_r + expert_s x experts_r over the ranks)
/// plus the exchanges, 2 (N - 1) messages and the busiest rank's bytes, slowed by
/// N x threads / cores where the ranks outnumber the cores.
double predict_step_s(const EpCalibration& cal, const EpInfo& ep, int cores);

}  // namespace moe_bench
