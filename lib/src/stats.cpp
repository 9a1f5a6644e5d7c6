#include "moe_bench/stats.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace moe_bench {

double median(std::span<const double> samples) {
  if (samples.empty()) return 0;
  std::vector<double> v(samples.begin(), samples.end());
  const size_t mid = v.size() / 2;
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(mid), v.end());
  double hi = v[mid];
  if (v.size() % 2 == 1) return hi;
  double lo = *std::max_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(mid));
  return (lo + hi) / 2;
}

Stats summarize(std::span<const double> samples) {
  Stats s;
  s.n = static_cast<int64_t>(samples.size());
  if (samples.empty()) return s;
  const double n = static_cast<double>(s.n);
  s.mean_s = std::accumulate(samples.begin(), samples.end(), 0.0) / n;
  s.median_s = median(samples);
  auto [lo, hi] = std::minmax_element(samples.begin(), samples.end());
  s.min_s = *lo;
  s.max_s = *hi;
  if (s.n > 1) {
    double ss = 0;
    for (double x : samples) ss += (x - s.mean_s) * (x - s.mean_s);
    s.stddev_s = std::sqrt(ss / (n - 1));
  }
  s.cv = s.mean_s > 0 ? s.stddev_s / s.mean_s : 0;
  return s;
}

}  // namespace moe_bench
