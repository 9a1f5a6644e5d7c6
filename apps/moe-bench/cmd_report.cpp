#include <fmt/format.h>

#include "commands.hpp"
#include "moe_bench/report.hpp"

namespace moe_bench::cli {

Command add_report_command(CLI::App& app) {
  struct Options {
    std::string input, md_path, format = "md";
  };
  auto o = std::make_shared<Options>();
  auto* sub = app.add_subcommand("report", "Render a saved JSON run (Markdown by default)");
  sub->add_option("RESULTS", o->input, "A JSON report written by `run --json`")->required();
  sub->add_option("--md", o->md_path, "Write the Markdown report to FILE instead of stdout");
  sub->add_option("--format", o->format, "Standard output: md, table, json, jsonl, csv");
  return {sub, [o] {
            const Format format = parse_format(o->format);
            if (!o->md_path.empty()) check_writable(o->md_path);
            Report report = read_report(o->input);
            if (!o->md_path.empty()) {
              write_file_atomically(o->md_path, render_markdown(report));
            } else {
              fmt::print("{}", render(report, format));
            }
            return 0;
          }};
}

}  // namespace moe_bench::cli
