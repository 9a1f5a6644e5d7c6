#include "moe_bench/compare.hpp"

#include <catch2/catch.hpp>
#include <random>

#include "moe_bench/error.hpp"
#include "sample_report.hpp"

using namespace moe_bench;

namespace {

std::vector<double> samples(double median, double spread, int n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> noise(0.0, spread);
  std::vector<double> v(n);
  for (double& x : v) x = median * (1 + noise(rng));
  return v;
}

// A run with blas and cpu on one case, at the given medians and relative noise.
Report run_with(double blas_s, double cpu_s, double spread, uint64_t seed, int n = 20) {
  Report report = testing::sample_report();
  report.results.resize(2);
  report.results[0].impl = "blas";
  report.results[1].impl = "cpu";
  const double medians[2] = {blas_s, cpu_s};
  for (int i = 0; i < 2; ++i) {
    Result& r = report.results[i];
    r.status = Status::kOk;
    r.samples_s = samples(medians[i], spread, n, seed + i);
    r.stats = summarize(r.samples_s);
  }
  return report;
}

const Change& change_of(const RunComparison& c, const std::string& impl) {
  for (const Change& ch : c.changes) {
    if (ch.impl == impl) return ch;
  }
  FAIL("no change for " << impl);
  return c.changes.front();
}

Verdict verdict_of(const RunComparison& c, const std::string& impl) {
  return change_of(c, impl).verdict;
}

}  // namespace

TEST_CASE("Mann-Whitney U matches hand-computed values") {
  // a entirely below b: U = 0; with n1 = n2 = 5 the normal approximation gives p ~ 0.012.
  std::vector<double> a{1, 2, 3, 4, 5}, b{6, 7, 8, 9, 10};
  MannWhitney mw = mann_whitney(a, b);
  CHECK(mw.u == 0);
  CHECK(mw.p_value == Approx(0.0122).margin(0.001));
  CHECK(mann_whitney(a, a).p_value == Approx(1.0));
}

TEST_CASE("compare gives each verdict") {
  CompareOptions o;
  const Report old_run = run_with(0.010, 0.005, 0.01, 1);
  SECTION("a run compared with itself has no regression") {
    auto c = compare_reports(old_run, old_run, o);
    CHECK(verdict_of(c, "cpu") == Verdict::kUnchanged);
    CHECK_FALSE(c.regression());
  }
  SECTION("20% slower with low noise is a regression") {
    auto c = compare_reports(old_run, run_with(0.010, 0.006, 0.01, 2), o);
    CHECK(verdict_of(c, "cpu") == Verdict::kRegression);
    CHECK(verdict_of(c, "blas") == Verdict::kUnchanged);
    CHECK(c.regression());
  }
  SECTION("20% faster is an improvement") {
    auto c = compare_reports(old_run, run_with(0.010, 0.004, 0.01, 3), o);
    CHECK(verdict_of(c, "cpu") == Verdict::kImprovement);
    CHECK_FALSE(c.regression());
  }
  SECTION("a significant change inside the threshold is unchanged") {
    auto c = compare_reports(old_run, run_with(0.010, 0.0051, 0.002, 4), o);
    CHECK(verdict_of(c, "cpu") == Verdict::kUnchanged);
  }
  SECTION("too noisy to tell is inconclusive") {
    const Report noisy_old = run_with(0.010, 0.005, 0.4, 5, 6);
    auto c = compare_reports(noisy_old, run_with(0.010, 0.0055, 0.4, 6, 6), o);
    CHECK(verdict_of(c, "cpu") == Verdict::kInconclusive);
    CHECK_FALSE(c.notes.empty());  // fewer than 9 samples
  }
  SECTION("a correctness failure in NEW counts as a regression") {
    Report bad = old_run;
    bad.results[1].status = Status::kFailed;
    bad.results[1].reason = "output differs";
    auto c = compare_reports(old_run, bad, o);
    CHECK(c.regression());
    CHECK(c.failed_new.size() == 1);
  }
}

TEST_CASE("compare --confirm keeps a regression only if the second pass finds it too") {
  CompareOptions o;
  const Report old_run = run_with(0.010, 0.005, 0.01, 1);
  const RunComparison first = compare_reports(old_run, run_with(0.010, 0.006, 0.01, 2), o);
  REQUIRE(verdict_of(first, "cpu") == Verdict::kRegression);
  SECTION("slower again: confirmed, with the second pass's figures and a note of the first") {
    const RunComparison again = compare_reports(old_run, run_with(0.010, 0.0062, 0.01, 7), o);
    const RunComparison c = confirm_regressions(first, again);
    CHECK(c.regression());
    CHECK(verdict_of(c, "cpu") == Verdict::kRegression);
    CHECK(change_of(c, "cpu").ratio == change_of(again, "cpu").ratio);
    CHECK(change_of(c, "cpu").ratio != change_of(first, "cpu").ratio);
    REQUIRE(c.notes.size() == 1);
    CHECK(c.notes[0].find("(confirmed)") != std::string::npos);
  }
  SECTION("not slower when re-measured: no regression, and the note says why") {
    const RunComparison again = compare_reports(old_run, run_with(0.010, 0.005, 0.01, 8), o);
    const RunComparison c = confirm_regressions(first, again);
    CHECK_FALSE(c.regression());
    CHECK(verdict_of(c, "cpu") == Verdict::kUnchanged);
    REQUIRE(c.notes.size() == 1);
    CHECK(c.notes[0].find("(not confirmed)") != std::string::npos);
    CHECK(c.notes[0].find("1.2") != std::string::npos);  // the first pass's ratio
  }
  SECTION("a second pass cannot clear what it did not measure, nor a correctness failure") {
    Report bad = old_run;
    bad.results[0].status = Status::kFailed;  // blas fails in NEW's second pass; cpu is absent
    bad.results[0].reason = "output differs";
    bad.results.resize(1);
    const RunComparison again = compare_reports(old_run, bad, o);
    const RunComparison c = confirm_regressions(first, again);
    CHECK(verdict_of(c, "cpu") == Verdict::kRegression);
    CHECK(c.failed_new.size() == 1);
  }
  SECTION("only a regression is re-judged: an improvement of the first pass stays") {
    const RunComparison faster = compare_reports(old_run, run_with(0.010, 0.004, 0.01, 3), o);
    const RunComparison again = compare_reports(old_run, run_with(0.010, 0.006, 0.01, 9), o);
    const RunComparison c = confirm_regressions(faster, again);
    CHECK(verdict_of(c, "cpu") == Verdict::kImprovement);
    CHECK(c.notes.empty());
  }
}

TEST_CASE("relative comparison follows the yardstick when the whole machine slows down") {
  const Report old_run = run_with(0.010, 0.005, 0.01, 1);
  const Report slow_machine = run_with(0.020, 0.010, 0.01, 7);
  CompareOptions raw;
  CHECK(compare_reports(old_run, slow_machine, raw).regression());
  CompareOptions relative;
  relative.relative_to = "blas";
  auto c = compare_reports(old_run, slow_machine, relative);
  CHECK_FALSE(c.regression());
  REQUIRE(c.changes.size() == 1);  // the yardstick itself is not judged
  CHECK(c.changes[0].ratio == Approx(1.0).margin(0.02));
  // cpu 20% slower relative to blas on the same slow machine is still caught.
  CHECK(compare_reports(old_run, run_with(0.020, 0.012, 0.01, 8), relative).regression());
}

TEST_CASE("compare refuses runs with nothing in common") {
  Report other = run_with(0.010, 0.005, 0.01, 1);
  for (Result& r : other.results) r.kase.shape.tokens = 999;
  CHECK_THROWS_AS(compare_reports(run_with(0.010, 0.005, 0.01, 1), other, {}), UsageError);
  CompareOptions o;
  o.relative_to = "torch";
  CHECK_THROWS_AS(
      compare_reports(run_with(0.01, 0.005, 0.01, 1), run_with(0.01, 0.005, 0.01, 2), o),
      UsageError);
}
