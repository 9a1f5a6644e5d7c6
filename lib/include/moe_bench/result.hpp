#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "moe_bench/correctness.hpp"
#include "moe_bench/roofline.hpp"
#include "moe_bench/routing.hpp"
#include "moe_bench/shape.hpp"
#include "moe_bench/stats.hpp"
#include "moe_bench/sysinfo.hpp"

namespace moe_bench {

/// One point of a run: a shape with its dtype, threads and seed.
struct Case {
  Shape shape;
  Dtype dtype = Dtype::kF32;
  int threads = 1;
  uint64_t seed = 42;
};

enum class Status { kOk, kFailed, kSkipped };
std::string_view to_string(Status s);

/// Figures derived from the median time and the design's FLOP and byte counts.
struct Derived {
  double tokens_per_s = 0, gflops = 0, gbytes_per_s = 0;
  double roofline_pct = 0;  ///< the roofline bound's time as a percentage of the median
  std::string bound;        ///< "compute" or "memory"
  /// The result ran faster than its ceiling allows: the peak was measured low (a busy machine) or
  /// the data came from a cache. A measurement problem, never a percentage to quote.
  bool over_ceiling() const { return roofline_pct > 100.0; }
};

/// A result's place on the roofline for people: "85.2%", "over ceiling" above 100%, "-" unknown.
std::string roofline_text(const Derived& d);

/// Time per call of one stage of an implementation (route, dispatch, experts, combine).
struct StageTime {
  std::string name;
  double seconds = 0;
};

enum class CacheMode { kCold, kWarm };
std::string_view to_string(CacheMode m);

/// An expert-parallel result (DESIGN.md, "Expert parallelism"): medians over the samples, each
/// stage's time the maximum over ranks in its iteration.
struct EpInfo {
  int ranks = 1;
  std::string placement;
  int replicas = 0;
  int64_t tokens_per_rank = 0;  ///< tokens each rank holds (the layer has ranks x this)
  double route_s = 0, dispatch_s = 0, compute_s = 0, combine_s = 0;
  std::string exchange = "alltoallv";  ///< how rows moved: "window" or "alltoallv"
  /// The exchanges alone within dispatch and combine (the rest packs, unpacks and sums).
  double dispatch_exchange_s = 0, combine_exchange_s = 0;
  int threads_per_rank = 1;
  double bytes_sent_per_rank = 0;  ///< dispatch and combine, the most any rank sent
  double dispatch_bytes_per_rank = 0, combine_bytes_per_rank = 0;  ///< each, the most any rank
  double alltoall_gbytes_per_s = 0;       ///< MPI_Alltoallv alone on the same counts, in the run
  double exchange_pct_of_alltoall = 0;    ///< the exchanges' rate as a share of that
  std::vector<int64_t> rows_per_rank;     ///< expert assignments each rank computed
  std::vector<int64_t> experts_per_rank;  ///< distinct experts each rank computed
  double load_max_over_mean = 0;          ///< of rows_per_rank
  double single_process_s = 0;            ///< the same implementation in one process, N x T tokens
  double model_predicted_s = 0;           ///< the cost model's step time (0: no model)
};

/// One implementation serving one arrival rate (DESIGN.md, "Serving under load").
struct ServingInfo {
  double rate_rps = 0;      ///< offered: requests scheduled per second
  double achieved_rps = 0;  ///< served requests over the time from first arrival to last completion
  double tokens_per_s = 0;
  double duration_s = 0;                                         ///< the arrival window
  double p50_s = 0, p90_s = 0, p95_s = 0, p99_s = 0, max_s = 0;  ///< latency from arrival
  std::array<double, 2> p99_ci_s{};                              ///< bootstrap percentile
  double queue_p50_s = 0, queue_p99_s = 0;  ///< arrival to the start of its batch
  double compute_mean_s = 0;                ///< per batch
  double batch_tokens_mean = 0;
  int64_t batch_tokens_max = 0, batches = 0, requests = 0, unserved = 0;
  double slo_s = 0;
  bool meets_slo = false;           ///< P99 within the SLO and nothing left unserved
  double batcher_overhead_pct = 0;  ///< the batcher's own time, as a share of one core
};

/// The highest rate an implementation served within the SLO.
struct ServingSummary {
  std::string impl;
  double max_rate_at_slo_rps = 0;  ///< 0: none of the rates tried met it
  double slo_s = 0;
};

/// One implementation on one case.
struct Result {
  Case kase;
  std::string impl;
  Status status = Status::kSkipped;
  std::string reason;  ///< why skipped or failed
  std::optional<Correctness> correctness;
  /// Quantized weights (Shape::weights): the output against the unquantized f32 layer on the
  /// same inputs, checked by the FP64 oracle of that layer: the quantization's own error
  /// (nmse, max_rel_err; pass is not a verdict, quantization has no tolerance).
  std::optional<Correctness> quantization_error;
  std::vector<double> samples_s;  ///< seconds per call
  Stats stats;
  Derived derived;
  Load load;
  BlasInfo blas;
  double setup_s = 0;      ///< prepare() time
  int64_t layers = 1;      ///< independent weight sets the samples rotated through
  double round_bytes = 0;  ///< bytes one round through the layers touches (weights, x and y)
  int64_t inner_reps = 1;  ///< calls per sample (calibrated to the minimum sample time)
  std::string notes;       ///< e.g. a peer's versions and BLAS
  std::vector<StageTime> stages;
  bool device_timed = false;           ///< held to the device's ceilings, not the CPU's
  std::optional<EpInfo> ep;            ///< expert-parallel runs only
  std::optional<ServingInfo> serving;  ///< `serve` runs only
};

/// Speed-up of implementation `a` over `b` on one case.
struct Comparison {
  Case kase;
  std::string a, b;
  Speedup speedup;
};

/// One line of `validate`: a correctness check, a timed workload or a README claim.
struct CheckLine {
  std::string group;  ///< "correctness", "timing" or "claim"
  std::string name;
  Status status = Status::kSkipped;  ///< ok = passed
  std::string detail;
};

/// One run of the tool: where it ran and what it found.
struct Report {
  SystemInfo system;
  std::vector<Peaks> peaks;                 ///< measured once per thread count used
  std::optional<DevicePeaks> device_peaks;  ///< when a device implementation ran
  CacheMode cache = CacheMode::kCold;
  std::vector<Result> results;
  std::vector<Comparison> comparisons;
  std::vector<ServingSummary> serving_summary;  ///< `serve` only
  std::vector<std::string> warnings;
  std::vector<CheckLine> checks;  ///< validate's checklist (empty for run)
  bool interrupted = false;
};

}  // namespace moe_bench
