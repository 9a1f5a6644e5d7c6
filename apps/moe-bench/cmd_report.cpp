#include <fmt/format.h>

#include "commands.hpp"
#include "moe_bench/error.hpp"
#include "moe_bench/report.hpp"
#include "moe_bench/stats.hpp"

namespace moe_bench::cli {
namespace {

// The speed-ups of every other result of a case over each baseline's, by the same bootstrap as a
// run (seeded by the case's seed).
void rebase_comparisons(Report& report, const std::vector<std::string>& baselines) {
  bool found = false;
  report.comparisons.clear();
  for (const std::string& name : baselines) {
    for (const Result& base : report.results) {
      if (base.impl != name || base.status != Status::kOk) continue;
      found = true;
      for (const Result& r : report.results) {
        if (&r == &base || r.status != Status::kOk || !(r.kase.shape == base.kase.shape) ||
            r.kase.dtype != base.kase.dtype || r.kase.threads != base.kase.threads) {
          continue;
        }
        report.comparisons.push_back(
            {r.kase, r.impl, base.impl, speedup(r.samples_s, base.samples_s, r.kase.seed)});
      }
    }
  }
  if (!found) {
    throw UsageError(fmt::format("no result of {} in {}", fmt::join(baselines, ", "),
                                 report.results.empty() ? "an empty report" : "this report"));
  }
}

}  // namespace

Command add_report_command(CLI::App& app) {
  struct Options {
    std::string input, md_path, format = "md";
    std::vector<std::string> baselines;
  };
  auto o = std::make_shared<Options>();
  auto* sub = app.add_subcommand("report", "Render a saved JSON run (Markdown by default)");
  sub->add_option("RESULTS", o->input, "A JSON report written by `run --json`")->required();
  sub->add_option("--md", o->md_path, "Write the Markdown report to FILE instead of stdout");
  sub->add_option("--format", o->format, "Standard output: md, table, json, jsonl, csv");
  sub->add_option("--baseline", o->baselines,
                  "Recompute the speed-ups over these implementations from the saved samples "
                  "(comma list; replaces the run's)")
      ->delimiter(',');
  return {sub, [o] {
            const Format format = parse_format(o->format);
            if (!o->md_path.empty()) check_writable(o->md_path);
            Report report = read_report(o->input);
            if (!o->baselines.empty()) rebase_comparisons(report, o->baselines);
            if (!o->md_path.empty()) {
              write_file_atomically(o->md_path, render_markdown(report));
            } else {
              fmt::print("{}", render(report, format));
            }
            return 0;
          }};
}

}  // namespace moe_bench::cli
