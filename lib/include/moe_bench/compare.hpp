#pragma once

#include <optional>
#include <span>
#include <string>
#include <vector>

#include "moe_bench/result.hpp"

namespace moe_bench {

/// Two-sided Mann-Whitney U test (normal approximation with tie and continuity corrections).
struct MannWhitney {
  double u = 0;        ///< U statistic of the first sample
  double p_value = 1;  ///< two-sided
};
MannWhitney mann_whitney(std::span<const double> a, std::span<const double> b);

enum class Verdict { kRegression, kImprovement, kUnchanged, kInconclusive };
std::string_view to_string(Verdict v);

struct CompareOptions {
  double alpha = 0.05;      ///< significance level of the Mann-Whitney test
  double threshold = 0.05;  ///< a regression must be slower by more than this fraction
  std::string relative_to;  ///< compare in-run ratios to this implementation instead of times
  uint64_t seed = 1;
};

/// One matched (case, implementation) of the two runs.
struct Change {
  Case kase;
  std::string impl;
  double ratio = 0;         ///< new / old median time (or in-run ratio); above 1 is slower
  Interval ratio_ci{0, 0};  ///< 95% bootstrap interval of the ratio
  double p_value = 1;
  int64_t n_old = 0, n_new = 0;
  Verdict verdict = Verdict::kInconclusive;
};

struct RunComparison {
  std::vector<Change> changes;
  std::vector<std::string> notes;       ///< few samples, unmatched results, ...
  std::vector<std::string> failed_new;  ///< results of NEW that failed correctness
  bool regression() const;
};

/// Matches results by case (without the seed) and implementation and judges each change.
/// Throws UsageError when nothing matches or the --relative-to implementation is absent.
RunComparison compare_reports(const Report& old_run, const Report& new_run,
                              const CompareOptions& o);

/// Whether two cases are the same but for their seed: how results of two runs are matched.
bool same_case(const Case& a, const Case& b);

/// A second, independent look at `first`'s regressions (`compare --confirm`): `again` compares
/// the same builds on the cases `first` found slower, measured afresh. A change stays a
/// regression only if `again` finds it one too; either way `again`'s measurement replaces it,
/// with a note giving the first one. A regression `again` did not measure stays as it was.
/// Correctness failures of either pass count.
RunComparison confirm_regressions(RunComparison first, const RunComparison& again);

std::string render_compare_table(const RunComparison& c, const CompareOptions& o);
std::string render_compare_markdown(const RunComparison& c, const CompareOptions& o);
/// The verdicts as JSON: {schema_version, compared, alpha, threshold, regression, changes[],
/// failed_new[], notes[]}.
std::string render_compare_json(const RunComparison& c, const CompareOptions& o);

}  // namespace moe_bench
