#include "moe_bench/compare.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <random>

#include "moe_bench/error.hpp"
#include "moe_bench/report.hpp"

namespace moe_bench {
namespace {

// Few samples make the normal approximation and the bootstrap unreliable (as google/benchmark's
// compare.py warns below 9 repetitions).
constexpr int64_t kMinSamples = 9;

std::string match_key(const Case& c, const std::string& impl) {
  nlohmann::json j = case_to_json(c);
  j.erase("seed");
  return j.dump() + "|" + impl;
}

// An expert-parallel result is matched with the same placement and exchange (a launch can hold
// several of them on one case).
std::string match_key(const Result& r) {
  std::string key = match_key(r.kase, r.impl);
  if (r.ep) {
    key += fmt::format("|ep {} {} +{} {}", r.ep->ranks, r.ep->placement, r.ep->replicas,
                       r.ep->exchange);
  }
  return key;
}

double normal_sf(double z) { return 0.5 * std::erfc(z / std::sqrt(2.0)); }

std::vector<double> scaled(std::span<const double> v, double by) {
  std::vector<double> out(v.begin(), v.end());
  for (double& x : out) x /= by;
  return out;
}

// Bootstrap interval of median(new_a)/median(new_b) / (median(old_a)/median(old_b)); empty b
// spans mean plain times.
Interval bootstrap_ratio(std::span<const double> old_a, std::span<const double> old_b,
                         std::span<const double> new_a, std::span<const double> new_b,
                         uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto resampled_median = [&](std::span<const double> v) {
    if (v.empty()) return 1.0;
    std::uniform_int_distribution<size_t> pick(0, v.size() - 1);
    std::vector<double> r(v.size());
    for (double& x : r) x = v[pick(rng)];
    return median(r);
  };
  std::vector<double> ratios(kBootstrapResamples);
  for (double& r : ratios) {
    const double o = resampled_median(old_a) / resampled_median(old_b);
    const double n = resampled_median(new_a) / resampled_median(new_b);
    r = o > 0 ? n / o : 0;
  }
  return {quantile(ratios, 0.025), quantile(ratios, 0.975)};
}

Verdict judge(double ratio, const Interval& ci, double p, const CompareOptions& o) {
  const double slower = 1 + o.threshold, faster = 1 / (1 + o.threshold);
  const bool significant = p < o.alpha;
  if (significant && ratio > slower) return Verdict::kRegression;
  if (significant && ratio < faster) return Verdict::kImprovement;
  if (ci[0] >= faster && ci[1] <= slower) return Verdict::kUnchanged;
  // Significant but small, or not significant: unchanged only if the interval rules out a change
  // beyond the threshold; otherwise too noisy to tell.
  return significant ? Verdict::kUnchanged : Verdict::kInconclusive;
}

}  // namespace

MannWhitney mann_whitney(std::span<const double> a, std::span<const double> b) {
  MannWhitney out;
  const auto n1 = static_cast<double>(a.size()), n2 = static_cast<double>(b.size());
  if (a.empty() || b.empty()) return out;
  std::vector<std::pair<double, int>> all;
  for (double x : a) all.emplace_back(x, 0);
  for (double x : b) all.emplace_back(x, 1);
  std::sort(all.begin(), all.end());
  double rank_sum_a = 0, tie_term = 0;
  for (size_t i = 0; i < all.size();) {
    size_t j = i;
    while (j < all.size() && all[j].first == all[i].first) ++j;
    const double avg_rank = (static_cast<double>(i + j) + 1) / 2;  // ranks are 1-based
    const auto t = static_cast<double>(j - i);
    tie_term += t * t * t - t;
    for (size_t m = i; m < j; ++m) rank_sum_a += all[m].second == 0 ? avg_rank : 0;
    i = j;
  }
  out.u = rank_sum_a - n1 * (n1 + 1) / 2;
  const double mean = n1 * n2 / 2;
  const double n = n1 + n2;
  const double var = n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1)));
  if (var <= 0) {
    out.p_value = 1;
    return out;
  }
  const double z = (std::fabs(out.u - mean) - 0.5) / std::sqrt(var);
  out.p_value = std::min(1.0, 2 * normal_sf(std::max(z, 0.0)));
  return out;
}

std::string_view to_string(Verdict v) {
  switch (v) {
    case Verdict::kRegression:
      return "regression";
    case Verdict::kImprovement:
      return "improvement";
    case Verdict::kUnchanged:
      return "unchanged";
    case Verdict::kInconclusive:
      return "inconclusive";
  }
  return "?";
}

bool RunComparison::regression() const {
  if (!failed_new.empty()) return true;
  return std::any_of(changes.begin(), changes.end(),
                     [](const Change& c) { return c.verdict == Verdict::kRegression; });
}

RunComparison compare_reports(const Report& old_run, const Report& new_run,
                              const CompareOptions& o) {
  RunComparison out;
  std::map<std::string, const Result*> old_by_key, new_by_key;
  for (const Result& r : old_run.results) {
    if (r.status == Status::kOk) old_by_key[match_key(r)] = &r;
  }
  for (const Result& r : new_run.results) {
    if (r.status == Status::kFailed) {
      out.failed_new.push_back(fmt::format("{} on {}: {}", r.impl, case_label(r.kase), r.reason));
    }
    if (r.status == Status::kOk) new_by_key[match_key(r)] = &r;
  }
  const bool relative = !o.relative_to.empty();
  bool yardstick_seen = false;
  for (const auto& [key, nr] : new_by_key) {
    auto it = old_by_key.find(key);
    if (it == old_by_key.end()) continue;
    const Result& orr = *it->second;
    Change c;
    c.kase = nr->kase;
    c.impl = nr->impl;
    if (nr->ep) c.impl += fmt::format(" ({}, {})", nr->ep->placement, nr->ep->exchange);
    c.n_old = orr.stats.n;
    c.n_new = nr->stats.n;
    if (relative) {
      if (nr->impl == o.relative_to) {
        yardstick_seen = true;
        continue;
      }
      auto old_ref = old_by_key.find(match_key(orr.kase, o.relative_to));
      auto new_ref = new_by_key.find(match_key(nr->kase, o.relative_to));
      if (old_ref == old_by_key.end() || new_ref == new_by_key.end()) continue;
      const Result& ro = *old_ref->second;
      const Result& rn = *new_ref->second;
      // Samples in units of the run's own yardstick median: the yardstick moves with the machine.
      const auto old_norm = scaled(orr.samples_s, ro.stats.median_s);
      const auto new_norm = scaled(nr->samples_s, rn.stats.median_s);
      c.ratio = median(new_norm) / median(old_norm);
      c.ratio_ci =
          bootstrap_ratio(orr.samples_s, ro.samples_s, nr->samples_s, rn.samples_s, o.seed);
      c.p_value = mann_whitney(old_norm, new_norm).p_value;
    } else {
      c.ratio = nr->stats.median_s / orr.stats.median_s;
      c.ratio_ci = bootstrap_ratio(orr.samples_s, {}, nr->samples_s, {}, o.seed);
      c.p_value = mann_whitney(orr.samples_s, nr->samples_s).p_value;
    }
    c.verdict = judge(c.ratio, c.ratio_ci, c.p_value, o);
    if (std::min(c.n_old, c.n_new) < kMinSamples) {
      out.notes.push_back(
          fmt::format("{} on {}: only {} and {} samples; fewer than {} make the "
                      "test unreliable",
                      c.impl, case_label(c.kase), c.n_old, c.n_new, kMinSamples));
    }
    out.changes.push_back(c);
  }
  if (relative && !yardstick_seen) {
    throw UsageError(fmt::format("--relative-to {}: no case has it in both runs", o.relative_to));
  }
  if (out.changes.empty() && out.failed_new.empty()) {
    throw UsageError("the two reports have no common (case, implementation) with results");
  }
  return out;
}

bool same_case(const Case& a, const Case& b) { return match_key(a, "") == match_key(b, ""); }

RunComparison confirm_regressions(RunComparison first, const RunComparison& again) {
  for (Change& ch : first.changes) {
    if (ch.verdict != Verdict::kRegression) continue;
    auto it = std::find_if(again.changes.begin(), again.changes.end(), [&](const Change& a) {
      return a.impl == ch.impl && same_case(a.kase, ch.kase);
    });
    if (it == again.changes.end()) continue;
    const bool confirmed = it->verdict == Verdict::kRegression;
    first.notes.push_back(fmt::format(
        "{} on {}: {:.3f}x [{:.3f}, {:.3f}] slower in the first pass; re-measured side by side, "
        "{:.3f}x [{:.3f}, {:.3f}], {}",
        ch.impl, case_label(ch.kase), ch.ratio, ch.ratio_ci[0], ch.ratio_ci[1], it->ratio,
        it->ratio_ci[0], it->ratio_ci[1],
        confirmed ? "a regression again (confirmed)" : "not a regression (not confirmed)"));
    ch = *it;
  }
  for (const std::string& f : again.failed_new) {
    if (std::find(first.failed_new.begin(), first.failed_new.end(), f) == first.failed_new.end()) {
      first.failed_new.push_back(f);
    }
  }
  return first;
}

std::string render_compare_table(const RunComparison& c, const CompareOptions& o) {
  std::string out = fmt::format(
      "{} (alpha {:g}, threshold {:g}%){}\n",
      o.relative_to.empty() ? "time new/old" : "ratio to " + o.relative_to + ", new/old", o.alpha,
      o.threshold * 100, "");
  out += fmt::format("{:<34} {:<12} {:>8} {:>18} {:>9} {:>7}  {}\n", "case", "impl", "ratio",
                     "95% CI", "p", "n", "verdict");
  for (const Change& ch : c.changes) {
    out += fmt::format("{:<34} {:<12} {:>8.3f} {:>18} {:>9.2g} {:>7}  {}\n", case_label(ch.kase),
                       ch.impl, ch.ratio,
                       fmt::format("[{:.3f}, {:.3f}]", ch.ratio_ci[0], ch.ratio_ci[1]), ch.p_value,
                       fmt::format("{}/{}", ch.n_old, ch.n_new), to_string(ch.verdict));
  }
  for (const auto& f : c.failed_new) out += "failed correctness in NEW: " + f + "\n";
  for (const auto& n : c.notes) out += "note: " + n + "\n";
  out += c.regression() ? "result: REGRESSION\n" : "result: no regression\n";
  return out;
}

std::string render_compare_markdown(const RunComparison& c, const CompareOptions& o) {
  int counts[4] = {0, 0, 0, 0};
  for (const Change& ch : c.changes) ++counts[static_cast<int>(ch.verdict)];
  std::string out =
      fmt::format("## moe-bench compare: {}\n\n", c.regression() ? "regression" : "no regression");
  out += fmt::format(
      "{} matched results: {} regressions, {} improvements, {} unchanged, {} inconclusive. "
      "Compared: {}; Mann-Whitney U at alpha {:g}, threshold {:g}%.\n\n",
      c.changes.size(), counts[0], counts[1], counts[2], counts[3],
      o.relative_to.empty() ? "median times" : "in-run ratios to " + o.relative_to, o.alpha,
      o.threshold * 100);
  out += "| case | impl | new/old | 95% CI | p | n old/new | verdict |\n";
  out += "|---|---|---|---|---|---|---|\n";
  for (const Change& ch : c.changes) {
    out += fmt::format("| {} | {} | {:.3f} | [{:.3f}, {:.3f}] | {:.2g} | {}/{} | {} |\n",
                       case_label(ch.kase), ch.impl, ch.ratio, ch.ratio_ci[0], ch.ratio_ci[1],
                       ch.p_value, ch.n_old, ch.n_new, to_string(ch.verdict));
  }
  if (!c.failed_new.empty()) {
    out += "\nFailed correctness in NEW:\n\n";
    for (const auto& f : c.failed_new) out += "- " + f + "\n";
  }
  if (!c.notes.empty()) {
    out += "\nNotes:\n\n";
    for (const auto& n : c.notes) out += "- " + n + "\n";
  }
  return out;
}

std::string render_compare_json(const RunComparison& c, const CompareOptions& o) {
  nlohmann::json changes = nlohmann::json::array();
  for (const Change& ch : c.changes) {
    changes.push_back({{"case", case_to_json(ch.kase)},
                       {"impl", ch.impl},
                       {"ratio", ch.ratio},
                       {"ratio_ci", {ch.ratio_ci[0], ch.ratio_ci[1]}},
                       {"p_value", ch.p_value},
                       {"n_old", ch.n_old},
                       {"n_new", ch.n_new},
                       {"verdict", to_string(ch.verdict)}});
  }
  const nlohmann::json j{
      {"schema_version", kSchemaVersion},
      {"compared", o.relative_to.empty() ? "median times" : "in-run ratios to " + o.relative_to},
      {"alpha", o.alpha},
      {"threshold", o.threshold},
      {"regression", c.regression()},
      {"changes", changes},
      {"failed_new", c.failed_new},
      {"notes", c.notes}};
  return j.dump(2) + "\n";
}

}  // namespace moe_bench
