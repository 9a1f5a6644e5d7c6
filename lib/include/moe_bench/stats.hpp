#pragma once

#include <cstdint>
#include <span>

namespace moe_bench {

/// Summary of timing samples (seconds per call). For n = 0 every field is 0; for n = 1 the
/// standard deviation is 0.
struct Stats {
  int64_t n = 0;
  double median_s = 0, mean_s = 0, stddev_s = 0, cv = 0, min_s = 0, max_s = 0;
};

/// Median of the samples (mean of the two middle values for even n); 0 for no samples.
double median(std::span<const double> samples);

/// Summarises samples; a pure function of them.
Stats summarize(std::span<const double> samples);

}  // namespace moe_bench
