#include <fmt/format.h>
#include <unistd.h>

#include <climits>
#include <filesystem>

#include "case_options.hpp"
#include "commands.hpp"
#include "moe_bench/compare.hpp"
#include "moe_bench/error.hpp"
#include "moe_bench/report.hpp"
#include "moe_bench/side_by_side.hpp"

namespace moe_bench::cli {
namespace {

struct CompareCommand {
  std::string old_path, new_path, md_path, json_path;
  CompareOptions compare;
  std::string against;  ///< the old build's binary: compare side by side in one run
  CaseOptions cases;
  std::string slowdown;  ///< test-only: IMPL:FRACTION slows the new build's IMPL
  int confirm = 0;       ///< re-measurements a regression must survive (--against)
  bool quiet = false;
};

std::string this_binary() {
  char buf[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) throw EnvironmentError("cannot find this moe-bench's own path (/proc/self/exe)");
  return std::string(buf, static_cast<size_t>(n));
}

struct Compared {
  RunComparison result;
  bool interrupted = false;
};

// The two builds side by side now, on the cases the run flags give; then, --confirm times, the
// cases found slower once more (a regression must be found in every pass).
Compared compare_side_by_side(CompareCommand& o) {
  if (!o.old_path.empty()) {
    throw UsageError("compare --against measures both builds now: give no report files");
  }
  if (!std::filesystem::is_regular_file(o.against) || access(o.against.c_str(), X_OK) != 0) {
    throw UsageError(fmt::format("--against '{}' is not an executable file", o.against));
  }
  SideBySideOptions sbs;
  sbs.old_binary = o.against;
  sbs.new_binary = this_binary();
  sbs.slowdown = parse_slowdown(o.slowdown);
  const std::vector<Case> cases = plan_checked(o.cases, 2);
  sbs.worker_args = case_arguments(o.cases);
  sbs.impls = o.cases.impls;
  interrupt_on_sigint();
  HarnessOptions harness = o.cases.harness;
  auto [old_run, new_run] = run_side_by_side(cases, harness, sbs, progress_lines(!o.quiet));
  RunComparison result = compare_reports(old_run, new_run, o.compare);
  for (int pass = 1; pass <= o.confirm && result.regression() && !new_run.interrupted; ++pass) {
    sbs.only.clear();
    for (size_t i = 0; i < cases.size(); ++i) {
      const bool slower = std::any_of(result.changes.begin(), result.changes.end(), [&](auto& ch) {
        return ch.verdict == Verdict::kRegression && same_case(ch.kase, cases[i]);
      });
      if (slower) sbs.only.push_back(i);
    }
    if (sbs.only.empty()) break;  // failed correctness: nothing to re-measure
    // Said even with --quiet: a CI log shows why the gate took longer.
    fmt::print(stderr,
               "compare: {} case{} slower: measuring again side by side (confirmation {} of {})\n",
               sbs.only.size(), sbs.only.size() == 1 ? "" : "s", pass, o.confirm);
    harness.seed = o.cases.harness.seed + static_cast<uint64_t>(pass);  // another sample order
    auto [old_again, new_again] = run_side_by_side(cases, harness, sbs, progress_lines(!o.quiet));
    result =
        confirm_regressions(std::move(result), compare_reports(old_again, new_again, o.compare));
    new_run.interrupted = new_again.interrupted;
  }
  return {std::move(result), new_run.interrupted};
}

int compare(CompareCommand& o) {
  const CompareOptions& c = o.compare;
  if (!(c.alpha > 0 && c.alpha < 1)) throw UsageError("--alpha must be in (0, 1)");
  if (!(c.threshold >= 0 && c.threshold < 10)) throw UsageError("--threshold must be in [0, 10)");
  if (o.confirm < 0 || o.confirm > 5) throw UsageError("--confirm must be in [0, 5]");
  if (o.confirm > 0 && o.against.empty()) {
    throw UsageError("--confirm re-measures side by side: it needs --against");
  }
  for (const auto& path : {o.md_path, o.json_path}) {
    if (!path.empty()) check_writable(path);
  }
  Compared compared;
  if (o.against.empty()) {
    if (o.old_path.empty() || o.new_path.empty()) {
      throw UsageError("compare needs OLD.json NEW.json, or --against OLD_BINARY");
    }
    const Report old_run = read_report(o.old_path), new_run = read_report(o.new_path);
    compared.result = compare_reports(old_run, new_run, c);
    compared.interrupted = new_run.interrupted;
  } else {
    compared = compare_side_by_side(o);
  }
  const RunComparison& result = compared.result;
  fmt::print("{}", render_compare_table(result, c));
  if (!o.md_path.empty()) write_file_atomically(o.md_path, render_compare_markdown(result, c));
  if (!o.json_path.empty()) write_file_atomically(o.json_path, render_compare_json(result, c));
  if (compared.interrupted) return 130;
  return result.regression() ? static_cast<int>(ExitCode::kCheckFailed) : 0;
}

}  // namespace

Command add_compare_command(CLI::App& app) {
  auto o = std::make_shared<CompareCommand>();
  auto* sub = app.add_subcommand(
      "compare",
      "Compare two JSON runs, or this build against another one side by side (--against): exit "
      "1 on a regression (the CI gate), 0 otherwise");
  sub->add_option("OLD", o->old_path, "Reference report (JSON)");
  sub->add_option("NEW", o->new_path, "Report to judge (JSON)");
  sub->add_option("--against", o->against,
                  "The old build's moe-bench: run both builds now on the cases the run flags "
                  "give, sample by sample");
  sub->add_option("--alpha", o->compare.alpha, "Significance level of the Mann-Whitney U test");
  sub->add_option("--threshold", o->compare.threshold,
                  "A regression is slower by more than this fraction (default 0.05)");
  sub->add_option("--relative-to", o->compare.relative_to,
                  "Compare each implementation's in-run ratio to IMPL instead of raw times");
  // The last --md or --json wins, so a script can override those of a wrapper (scripts/gate.sh).
  sub->add_option("--md", o->md_path, "Write a Markdown summary to FILE")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  sub->add_option("--json", o->json_path, "Write the verdicts as JSON to FILE")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  sub->add_option("--confirm", o->confirm,
                  "With --against: re-measure the cases found slower, side by side, up to N more "
                  "times; a regression must be found in every pass (default 0)");
  sub->add_flag("--quiet,-q", o->quiet, "No progress lines (--against)");
  add_case_options(sub, o->cases);
  // Test-only: how the gate's power is measured (docs/checks.md).
  sub->add_option("--inject-slowdown", o->slowdown,
                  "Test only: IMPL:FRACTION makes the new build's IMPL that much slower")
      ->group("");
  return {sub, [o] { return compare(*o); }};
}

Command add_worker_command(CLI::App& app) {
  struct WorkerCommand {
    CaseOptions cases;
    std::string slowdown;
  };
  auto o = std::make_shared<WorkerCommand>();
  auto* sub = app.add_subcommand("worker", "One build's side of compare --against (internal)");
  sub->group("");
  add_case_options(sub, o->cases);
  sub->add_option("--inject-slowdown", o->slowdown, "Test only: IMPL:FRACTION");
  return {sub, [o] {
            // Each build checks its own output on a smaller token sample than a run does (every
            // expert that received a token is still in it): the gate's time goes to sampling.
            o->cases.harness.oracle_flop_budget = 2e8;
            const std::vector<Case> cases = plan_checked(o->cases);
            return serve_worker(cases, o->cases.impls, o->cases.harness,
                                parse_slowdown(o->slowdown), stdin, stdout);
          }};
}

}  // namespace moe_bench::cli
