#include <fmt/format.h>

#include "commands.hpp"
#include "moe_bench/compare.hpp"
#include "moe_bench/error.hpp"
#include "moe_bench/report.hpp"

namespace moe_bench::cli {

Command add_compare_command(CLI::App& app) {
  struct Options {
    std::string old_path, new_path, md_path;
    CompareOptions compare;
  };
  auto o = std::make_shared<Options>();
  auto* sub = app.add_subcommand(
      "compare", "Compare two JSON runs: exit 1 on a regression (the CI gate), 0 otherwise");
  sub->add_option("OLD", o->old_path, "Reference report (JSON)")->required();
  sub->add_option("NEW", o->new_path, "Report to judge (JSON)")->required();
  sub->add_option("--alpha", o->compare.alpha, "Significance level of the Mann-Whitney U test");
  sub->add_option("--threshold", o->compare.threshold,
                  "A regression is slower by more than this fraction (default 0.05)");
  sub->add_option("--relative-to", o->compare.relative_to,
                  "Compare each implementation's in-run ratio to IMPL instead of raw times");
  sub->add_option("--md", o->md_path, "Write a Markdown summary to FILE");
  return {sub, [o] {
            const CompareOptions& c = o->compare;
            if (!(c.alpha > 0 && c.alpha < 1)) throw UsageError("--alpha must be in (0, 1)");
            if (!(c.threshold >= 0 && c.threshold < 10)) {
              throw UsageError("--threshold must be in [0, 10)");
            }
            if (!o->md_path.empty()) check_writable(o->md_path);
            const Report old_run = read_report(o->old_path);
            const Report new_run = read_report(o->new_path);
            const RunComparison result = compare_reports(old_run, new_run, c);
            fmt::print("{}", render_compare_table(result, c));
            if (!o->md_path.empty()) {
              write_file_atomically(o->md_path, render_compare_markdown(result, c));
            }
            return result.regression() ? static_cast<int>(ExitCode::kCheckFailed) : 0;
          }};
}

}  // namespace moe_bench::cli
