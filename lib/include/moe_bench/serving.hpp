#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "moe_bench/kernel.hpp"
#include "moe_bench/problem.hpp"
#include "moe_bench/result.hpp"

// Latency under load (DESIGN.md, "Serving under load"): requests arrive open loop on a schedule
// drawn in advance, a batcher groups what has arrived, one implementation runs the layer per
// batch, and each request's latency runs from its scheduled arrival to the end of its batch.
namespace moe_bench {

/// How requests arrive: Poisson (exponential gaps), gamma gaps with a coefficient of variation
/// (burstier above 1), or a trace of arrival times and token counts.
struct ArrivalSpec {
  enum class Kind { kPoisson, kGamma, kTrace } kind = Kind::kPoisson;
  double cv = 1.0;
  std::string trace_path;
  struct Entry {
    double t_s;
    int64_t tokens;
  };
  std::vector<Entry> trace;
};

/// "poisson", "gamma:CV" or "trace:FILE" (a JSONL file of {"t": seconds, "tokens": n}, times
/// not decreasing). Throws UsageError with the line of a malformed trace.
ArrivalSpec parse_arrivals(std::string_view spec);

/// Tokens per request: "N" (fixed) or "uniform:A:B" (integers A..B). Throws UsageError.
struct TokenDist {
  int64_t lo = 1, hi = 1;
  double mean() const { return 0.5 * static_cast<double>(lo + hi); }
};
TokenDist parse_request_tokens(std::string_view spec);

struct Request {
  double arrival_s;  ///< scheduled, from the start of the run
  int64_t tokens;
};

/// The requests of one run: arrivals at `rate` per second for `duration_s` seconds (a trace
/// keeps its own times, cut at the duration), seeded.
std::vector<Request> schedule_requests(const ArrivalSpec& arrivals, double rate, double duration_s,
                                       const TokenDist& tokens, uint64_t seed);

struct BatcherOptions {
  int64_t max_batch_tokens = 64;  ///< a batch holds at most this many tokens
  double max_wait_s = 0.002;      ///< a batch short of that waits at most this long for more
  double drain_limit_s = 0;       ///< stop this long after the last arrival (0: 2 x duration)
};

/// Serves `requests` on the real clock, open loop: `run_batch(tokens)` computes one batch and
/// returns when it is done. The batcher runs between batches on the calling thread, never
/// beside the layer; its own time is measured and reported. Requests still queued when the
/// drain limit passes count as unserved.
ServingInfo serve_requests(const std::vector<Request>& requests, const BatcherOptions& batcher,
                           double slo_s, const std::function<void(int64_t)>& run_batch,
                           uint64_t seed, std::vector<double>* batch_seconds = nullptr);

/// One implementation, prepared once on a problem of c.shape.tokens tokens (the largest batch),
/// serving arrival rates in turn; it rotates the case's cold layers batch by batch and checks the
/// first batch of each rate against the FP64 oracle after the run (taking no serving time). The
/// kernel must run prefixes (Kernel::runs_prefix).
class LayerServer {
 public:
  LayerServer(std::unique_ptr<Kernel> kernel, const Case& c, int64_t layers,
              const ArrivalSpec& arrivals, const TokenDist& sizes, const BatcherOptions& batcher,
              double duration_s, double slo_s);
  /// Requests per second that back-to-back full batches allow (timed on a few).
  double capacity_rps();
  /// Serves `rate` requests per second for the duration: a result with its serving block.
  Result serve(double rate);

 private:
  /// Sets r.correctness (and, for quantized weights, r.quantization_error) of the first batch.
  void check_first(int64_t tokens, const std::vector<float>& y,
                   const std::vector<int32_t>& selected, Result& r);
  Case c_;
  ArrivalSpec arrivals_;
  TokenDist sizes_;
  BatcherOptions batcher_;
  double duration_s_, slo_s_;
  std::unique_ptr<Kernel> kernel_;
  int64_t layers_;
  Problem problem_;
};

}  // namespace moe_bench
