#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <memory>

#include "baselines/python/python_peer.hpp"
#include "case_options.hpp"
#include "commands.hpp"
#include "moe_bench/error.hpp"
#include "moe_bench/harness.hpp"
#include "moe_bench/kernel.hpp"
#include "moe_bench/plan.hpp"
#include "moe_bench/report.hpp"
#include "moe_bench/roofline.hpp"
#include "moe_bench/sysinfo.hpp"
#include "registry.hpp"

namespace moe_bench::cli {
namespace {

struct RunOptions {
  CaseOptions cases;
  std::string json_path, md_path;
  std::string format = "table";
  std::string python;
  bool quiet = false;
};

void on_sigint(int) { request_interrupt(); }

int run(const RunOptions& o) {
  // Everything that can be wrong with the input is found before any work or any file is made.
  if (!o.python.empty()) python::set_interpreter(o.python);
  RunOptions checked = o;
  const std::vector<Case> cases = plan_checked(checked.cases);
  const std::vector<std::string>& impls = checked.cases.impls;
  const HarnessOptions& h = checked.cases.harness;
  const Format format = parse_format(o.format);
  for (const auto& path : {o.json_path, o.md_path}) {
    if (!path.empty()) check_writable(path);
  }

  std::signal(SIGINT, on_sigint);
  Report report;
  report.system = system_info(registry().device());
  std::vector<int> threads;
  for (const Case& c : cases) {
    if (std::find(threads.begin(), threads.end(), c.threads) == threads.end()) {
      threads.push_back(c.threads);
    }
  }
  for (int t : threads) report.peaks.push_back(measure_peaks(t));
  report.device_peaks = registry().device_peaks_for(impls);
  run_cases(cases, impls, h, report, progress_lines(!o.quiet));
  for (Peaks& p : report.peaks) keep_higher(p, measure_peaks(p.threads));  // measured again
  refresh_derived(report);
  report.system.blas = blas_info();
  report.warnings = collect_warnings(report);

  if (format != Format::kTable) {
    for (const auto& w : report.warnings) fmt::print(stderr, "warning: {}\n", w);
  }
  fmt::print("{}", render(report, format));
  if (!o.json_path.empty()) write_file_atomically(o.json_path, render_json(report));
  if (!o.md_path.empty()) write_file_atomically(o.md_path, render_markdown(report));
  if (report.interrupted) return 130;
  for (const Result& r : report.results) {
    if (r.status == Status::kFailed) return static_cast<int>(ExitCode::kCheckFailed);
  }
  return static_cast<int>(ExitCode::kOk);
}

}  // namespace

Command add_run_command(CLI::App& app) {
  auto options = std::make_shared<RunOptions>();
  RunOptions& o = *options;
  auto* sub = app.add_subcommand("run", "Run, check and time MoE layer forwards");
  add_case_options(sub, o.cases);
  sub->add_option("--baseline", o.cases.harness.baselines,
                  "Speed-ups are of each implementation over these (comma list; default "
                  "blas,numpy,torch,ipex, those present)")
      ->delimiter(',');
  sub->add_option("--python", o.python, "Interpreter of the numpy and torch peers");
  sub->add_option("--json", o.json_path, "Write the JSON report to FILE");
  sub->add_option("--md", o.md_path, "Write the Markdown report to FILE");
  sub->add_option("--format", o.format, "Standard output: table, json, jsonl, csv, md");
  sub->add_flag("--quiet,-q", o.quiet, "No progress line");
  return {sub, [options] { return run(*options); }};
}

}  // namespace moe_bench::cli
