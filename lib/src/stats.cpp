#include "moe_bench/stats.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

namespace moe_bench {
namespace {

double sorted_quantile(const std::vector<double>& v, double q) {
  if (v.empty()) return 0;
  const double h = q * static_cast<double>(v.size() - 1);
  const auto lo = static_cast<size_t>(std::floor(h));
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (h - static_cast<double>(lo)) * (v[hi] - v[lo]);
}

// Regularized incomplete beta I_x(a, b) by its continued fraction (Lentz's method).
double incomplete_beta(double a, double b, double x) {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  if (x > (a + 1) / (a + b + 2)) return 1 - incomplete_beta(b, a, 1 - x);
  const double front = std::exp(std::lgamma(a + b) - std::lgamma(a) - std::lgamma(b) +
                                a * std::log(x) + b * std::log(1 - x)) /
                       a;
  constexpr double kTiny = 1e-300;
  double f = 1, c = 1, d = 0;
  for (int i = 0; i <= 400; ++i) {
    const int m = i / 2;
    double num;
    if (i == 0) {
      num = 1;
    } else if (i % 2 == 0) {
      num = (m * (b - m) * x) / ((a + 2.0 * m - 1) * (a + 2.0 * m));
    } else {
      num = -((a + m) * (a + b + m) * x) / ((a + 2.0 * m) * (a + 2.0 * m + 1));
    }
    d = 1 + num * d;
    d = std::fabs(d) < kTiny ? kTiny : d;
    d = 1 / d;
    c = 1 + num / c;
    c = std::fabs(c) < kTiny ? kTiny : c;
    const double cd = c * d;
    f *= cd;
    if (std::fabs(1 - cd) < 1e-12) break;
  }
  return front * (f - 1);
}

// P(T <= t) for Student's t with `dof` degrees of freedom.
double student_t_cdf(double t, double dof) {
  const double x = dof / (dof + t * t);
  const double tail = 0.5 * incomplete_beta(dof / 2, 0.5, x);
  return t >= 0 ? 1 - tail : tail;
}

}  // namespace

double median(std::span<const double> samples) { return quantile(samples, 0.5); }

double quantile(std::span<const double> samples, double q) {
  std::vector<double> v(samples.begin(), samples.end());
  std::sort(v.begin(), v.end());
  return sorted_quantile(v, q);
}

double student_t_critical(double confidence, int64_t dof) {
  const double target = 1 - (1 - confidence) / 2;
  double lo = 0, hi = 1e3;
  for (int i = 0; i < 200; ++i) {
    const double mid = (lo + hi) / 2;
    (student_t_cdf(mid, static_cast<double>(dof)) < target ? lo : hi) = mid;
  }
  return (lo + hi) / 2;
}

Stats summarize(std::span<const double> samples, uint64_t seed) {
  Stats s;
  s.n = static_cast<int64_t>(samples.size());
  if (samples.empty()) return s;
  std::vector<double> v(samples.begin(), samples.end());
  std::sort(v.begin(), v.end());
  const double n = static_cast<double>(s.n);
  s.mean_s = std::accumulate(v.begin(), v.end(), 0.0) / n;
  s.median_s = s.p50_s = sorted_quantile(v, 0.5);
  s.p90_s = sorted_quantile(v, 0.90);
  s.p95_s = sorted_quantile(v, 0.95);
  s.p99_s = sorted_quantile(v, 0.99);
  s.min_s = v.front();
  s.max_s = v.back();
  s.median_ci_s = {s.median_s, s.median_s};
  s.mean_ci_s = {s.mean_s, s.mean_s};
  if (s.n == 1) return s;

  double ss = 0;
  for (double x : v) ss += (x - s.mean_s) * (x - s.mean_s);
  s.stddev_s = std::sqrt(ss / (n - 1));
  s.cv = s.mean_s > 0 ? s.stddev_s / s.mean_s : 0;
  const double half = student_t_critical(0.95, s.n - 1) * s.stddev_s / std::sqrt(n);
  s.mean_ci_s = {s.mean_s - half, s.mean_s + half};

  const double q1 = sorted_quantile(v, 0.25), q3 = sorted_quantile(v, 0.75), iqr = q3 - q1;
  for (double x : v) {
    const double beyond = std::max(q1 - x, x - q3);
    if (beyond > 3 * iqr) {
      ++s.outliers_severe;
    } else if (beyond > 1.5 * iqr) {
      ++s.outliers_mild;
    }
  }

  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<size_t> pick(0, v.size() - 1);
  std::vector<double> medians(kBootstrapResamples), resample(v.size());
  for (double& m : medians) {
    for (double& x : resample) x = v[pick(rng)];
    m = median(resample);
  }
  std::sort(medians.begin(), medians.end());
  s.median_ci_s = {sorted_quantile(medians, 0.025), sorted_quantile(medians, 0.975)};
  return s;
}

Speedup speedup(std::span<const double> a, std::span<const double> b, uint64_t seed) {
  Speedup out;
  if (a.empty() || b.empty()) return out;
  const double ma = median(a);
  out.ratio = ma > 0 ? median(b) / ma : 0;
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<size_t> pick_a(0, a.size() - 1), pick_b(0, b.size() - 1);
  std::vector<double> ratios(kBootstrapResamples), ra(a.size()), rb(b.size());
  for (double& r : ratios) {
    for (double& x : ra) x = a[pick_a(rng)];
    for (double& x : rb) x = b[pick_b(rng)];
    const double m = median(ra);
    r = m > 0 ? median(rb) / m : 0;
  }
  std::sort(ratios.begin(), ratios.end());
  out.ci = {sorted_quantile(ratios, 0.025), sorted_quantile(ratios, 0.975)};
  out.faster_with_confidence = out.ci[0] > 1.0;
  return out;
}

}  // namespace moe_bench
