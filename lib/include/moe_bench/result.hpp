#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "moe_bench/correctness.hpp"
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
};

/// One implementation on one case.
struct Result {
  Case kase;
  std::string impl;
  Status status = Status::kSkipped;
  std::string reason;  ///< why skipped or failed
  std::optional<Correctness> correctness;
  std::vector<double> samples_s;  ///< seconds per call
  Stats stats;
  Derived derived;
  Load load;
  BlasInfo blas;
  double setup_s = 0;  ///< prepare() time
  int64_t layers = 1;  ///< independent weight sets the samples rotated through
};

/// One run of the tool: where it ran and what it found.
struct Report {
  SystemInfo system;
  std::vector<Result> results;
  bool interrupted = false;
};

}  // namespace moe_bench
