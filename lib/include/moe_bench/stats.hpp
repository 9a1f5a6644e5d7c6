#pragma once

#include <array>
#include <cstdint>
#include <span>

namespace moe_bench {

/// An interval [low, high].
using Interval = std::array<double, 2>;

/// Summary of timing samples (seconds per call); a pure function of the samples and the seed.
/// Edge cases: n = 0 gives all zeros; n = 1 gives stddev 0, CV 0 and both intervals [x, x].
struct Stats {
  int64_t n = 0;
  double median_s = 0, mean_s = 0, stddev_s = 0, cv = 0, min_s = 0, max_s = 0;
  double p50_s = 0, p90_s = 0, p95_s = 0, p99_s = 0;
  Interval median_ci_s{0, 0};   ///< 95% bootstrap percentile interval of the median
  Interval mean_ci_s{0, 0};     ///< 95% Student t interval of the mean
  int64_t outliers_mild = 0;    ///< beyond 1.5 IQR of the quartiles but within 3 IQR (kept)
  int64_t outliers_severe = 0;  ///< beyond 3 IQR (kept)
};

/// Median (mean of the two middle values for even n); 0 for no samples.
double median(std::span<const double> samples);

/// Quantile q in [0, 1] with linear interpolation between order statistics (R's type 7).
double quantile(std::span<const double> samples, double q);

/// Two-sided Student t critical value for the given confidence and degrees of freedom.
double student_t_critical(double confidence, int64_t dof);

/// Bootstrap resamples used for intervals.
inline constexpr int kBootstrapResamples = 2000;

/// Summarises samples; the bootstrap is seeded, so equal inputs give equal outputs.
Stats summarize(std::span<const double> samples, uint64_t seed = 1);

/// Speed-up of A over B: median(B) / median(A), with a 95% bootstrap percentile interval from
/// resampling both sides independently.
struct Speedup {
  double ratio = 0;
  Interval ci{0, 0};
  bool faster_with_confidence = false;  ///< the whole interval is above 1
};
Speedup speedup(std::span<const double> a, std::span<const double> b, uint64_t seed = 1);

}  // namespace moe_bench
