#include "moe_bench/stats.hpp"

#include <catch2/catch.hpp>
#include <random>
#include <vector>

using namespace moe_bench;

TEST_CASE("summary statistics of hand-checkable samples") {
  std::vector<double> v{4, 1, 3, 2};
  Stats s = summarize(v);
  CHECK(s.n == 4);
  CHECK(s.median_s == 2.5);
  CHECK(s.mean_s == 2.5);
  CHECK(s.min_s == 1);
  CHECK(s.max_s == 4);
  // Sample variance: (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3.
  CHECK(s.stddev_s == Approx(std::sqrt(5.0 / 3.0)));
  CHECK(s.cv == Approx(std::sqrt(5.0 / 3.0) / 2.5));
  // Type-7 quantiles of 1..4: P90 = 1 + 0.9 * 3 = 3.7.
  CHECK(s.p90_s == Approx(3.7));
  CHECK(s.p99_s == Approx(3.97));
  // Mean CI: 2.5 +- t(0.975, 3) * sd / 2 with t = 3.182.
  CHECK(s.mean_ci_s[0] == Approx(2.5 - 3.1824 * std::sqrt(5.0 / 3.0) / 2).epsilon(1e-4));
  CHECK(median(std::vector<double>{5, 1, 9}) == 5);
}

TEST_CASE("stddev is 0 for one sample and everything is 0 for none") {
  Stats one = summarize(std::vector<double>{3.0});
  CHECK(one.stddev_s == 0);
  CHECK(one.median_s == 3.0);
  CHECK(one.median_ci_s == Interval{3.0, 3.0});
  CHECK(one.mean_ci_s == Interval{3.0, 3.0});
  Stats none = summarize(std::vector<double>{});
  CHECK(none.n == 0);
  CHECK(none.median_s == 0);
}

TEST_CASE("student t critical values match the tables") {
  CHECK(student_t_critical(0.95, 1) == Approx(12.706).epsilon(1e-4));
  CHECK(student_t_critical(0.95, 10) == Approx(2.228).epsilon(1e-3));
  CHECK(student_t_critical(0.95, 30) == Approx(2.042).epsilon(1e-3));
  CHECK(student_t_critical(0.95, 100000) == Approx(1.960).epsilon(1e-3));
}

TEST_CASE("Tukey fences count mild and severe outliers and keep them") {
  // Sorted: 1..8, 18, 100. Type-7 quartiles: Q1 = 3 + 0.25 * 1 = 3.25, Q3 = 7 + 0.75 * 1 = 7.75,
  // IQR = 4.5. Mild beyond Q3 + 6.75 = 14.5 (18); severe beyond Q3 + 13.5 = 21.25 (100).
  std::vector<double> v{1, 2, 3, 4, 5, 6, 7, 8, 18, 100};
  CHECK(quantile(v, 0.25) == Approx(3.25));
  CHECK(quantile(v, 0.75) == Approx(7.75));
  Stats s = summarize(v);
  CHECK(s.outliers_mild == 1);
  CHECK(s.outliers_severe == 1);
  CHECK(s.n == 10);
  CHECK(s.max_s == 100);
}

TEST_CASE("the bootstrap is seeded: equal inputs give equal intervals") {
  std::vector<double> v{1.0, 1.2, 0.9, 1.1, 1.05, 0.95, 1.3, 1.0};
  CHECK(summarize(v, 7).median_ci_s == summarize(v, 7).median_ci_s);
  Stats s = summarize(v);
  CHECK(s.median_ci_s[0] <= s.median_s);
  CHECK(s.median_ci_s[1] >= s.median_s);
}

TEST_CASE("the median interval covers the true median close to 95% of the time") {
  // Samples from a log-normal (skewed like latencies) whose median is exactly 1.
  std::mt19937_64 rng(2024);
  std::lognormal_distribution<double> dist(0.0, 0.3);
  constexpr int kTrials = 400;
  int covered = 0;
  for (int trial = 0; trial < kTrials; ++trial) {
    std::vector<double> v(41);
    for (double& x : v) x = dist(rng);
    Stats s = summarize(v, static_cast<uint64_t>(trial));
    covered += s.median_ci_s[0] <= 1.0 && 1.0 <= s.median_ci_s[1];
  }
  const double coverage = static_cast<double>(covered) / kTrials;
  // 400 trials at 95% have a standard error of 1.1%; allow about three of them either side.
  CHECK(coverage >= 0.91);
  CHECK(coverage <= 0.985);
}

TEST_CASE("speed-up is a ratio of medians and confident only when its interval clears 1") {
  std::vector<double> fast{1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 1.0};
  std::vector<double> slow{2.0, 2.2, 1.8, 2.0, 2.1, 1.9, 2.0};
  Speedup s = speedup(fast, slow);
  CHECK(s.ratio == Approx(2.0));
  CHECK(s.ci[0] > 1.0);
  CHECK(s.faster_with_confidence);
  Speedup same = speedup(fast, fast);
  CHECK(same.ratio == Approx(1.0));
  CHECK(same.ci[0] < 1.0);
  CHECK_FALSE(same.faster_with_confidence);
}
