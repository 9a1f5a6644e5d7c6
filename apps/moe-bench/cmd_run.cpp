#include <unistd.h>

#include <chrono>
#include <fmt/format.h>
#include <memory>

#include "commands.hpp"
#include "moe_bench/error.hpp"
#include "moe_bench/harness.hpp"
#include "moe_bench/kernel.hpp"
#include "moe_bench/plan.hpp"
#include "moe_bench/report.hpp"
#include "moe_bench/sysinfo.hpp"

namespace moe_bench::cli {
namespace {

struct RunOptions {
  Axes axes;
  std::vector<std::string> impls;
  int reps = 20;
  int warmup = 1;
  std::string json_path;
  std::string format = "table";
  std::string blas_core;
  bool quiet = false;
};

// A live "case i/N" line with an ETA, only on a terminal and never under --quiet.
ProgressFn progress_line(bool enabled) {
  if (!enabled || isatty(STDERR_FILENO) == 0) return {};
  auto start = std::chrono::steady_clock::now();
  return [start](int64_t step, int64_t total, const std::string& what) {
    double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::string eta = step > 0 ? fmt::format(", ETA {:.0f} s", elapsed / static_cast<double>(step) *
                                                                  static_cast<double>(total - step))
                               : "";
    fmt::print(stderr, "\r\033[K[{}/{}] {}{}", step, total, what, eta);
    if (step == total) fmt::print(stderr, "\r\033[K");
  };
}

int run(const RunOptions& o) {
  // Everything that can be wrong with the input is found before any work or any file is made.
  std::vector<Case> cases = plan_cases(o.axes);
  std::vector<std::string> impls = o.impls.empty() ? kernel_names() : o.impls;
  for (const auto& name : impls) {
    auto kernel = make_kernel(name);
    if (!o.impls.empty()) {
      if (auto why = kernel->unavailable_reason()) {
        throw EnvironmentError(fmt::format("implementation '{}' cannot run here: {}", name, *why));
      }
    }
  }
  const Format format = parse_format(o.format);
  if (!o.json_path.empty()) check_writable(o.json_path);
  if (o.reps < 1 || o.warmup < 0) throw UsageError("--reps must be >= 1 and --warmup >= 0");

  HarnessOptions h;
  h.reps = o.reps;
  h.warmup = o.warmup;
  Report report;
  report.system = system_info();
  report.results = run_cases(cases, impls, h, progress_line(!o.quiet));
  report.system.blas = blas_info();

  for (const auto& w : report_warnings(report)) fmt::print(stderr, "warning: {}\n", w);
  fmt::print("{}", render(report, format));
  if (!o.json_path.empty()) write_file_atomically(o.json_path, render_json(report));
  for (const Result& r : report.results) {
    if (r.status == Status::kFailed) return static_cast<int>(ExitCode::kCheckFailed);
  }
  return static_cast<int>(ExitCode::kOk);
}

}  // namespace

Command add_run_command(CLI::App& app) {
  auto options = std::make_shared<RunOptions>();
  RunOptions& o = *options;
  Axes& a = o.axes;
  auto* sub = app.add_subcommand("run", "Run, check and time MoE layer forwards");
  sub->add_option("--impl", o.impls, "Implementations (comma list; default: all registered)")
      ->delimiter(',');
  sub->add_option("--preset", a.presets, "Real-model presets (comma list, see `list`)")
      ->delimiter(',');
  sub->add_option("--workload", a.workloads, "Standard workloads A, B (default when no shape is given)")
      ->delimiter(',');
  sub->add_option("--experts", a.experts, "Experts E (comma list)")->delimiter(',');
  sub->add_option("--top-k", a.top_k, "Experts per token k (comma list)")->delimiter(',');
  sub->add_option("--d-model", a.d_model, "Model width d (comma list)")->delimiter(',');
  sub->add_option("--d-ff", a.d_ff, "Expert width f (comma list)")->delimiter(',');
  sub->add_option("--tokens", a.tokens, "Tokens per batch T (comma list)")->delimiter(',');
  sub->add_option("--routing", a.routing, "Routing skew: uniform, zipf:S, hot:P (comma list)")
      ->delimiter(',');
  sub->add_option("--capacity-factor", a.capacity_factor,
                  "Capacity factor C (0 = dropless; comma list)")
      ->delimiter(',');
  sub->add_option("--threads", a.threads, "Threads (comma list; default: all cores)")
      ->delimiter(',');
  sub->add_option("--dtype", a.dtypes, "Data types (comma list): f32")->delimiter(',');
  sub->add_option("--activation", a.activation, "Expert activation: swiglu, gelu, swiglu_oai");
  sub->add_option("--seed", a.seed, "Seed of the generated data");
  sub->add_option("--reps", o.reps, "Timed calls per result");
  sub->add_option("--warmup", o.warmup, "Untimed calls before timing");
  sub->add_option("--json", o.json_path, "Write the JSON report to FILE");
  sub->add_option("--format", o.format, "Standard output: table, json, jsonl, csv");
  // Acted on in main before parsing (OpenBLAS reads its kernel choice at load time).
  sub->add_option("--blas-core", o.blas_core,
                  "OpenBLAS kernel: auto (best for this CPU) or a core name; default: "
                  "OPENBLAS_CORETYPE when set, else auto");
  sub->add_flag("--quiet,-q", o.quiet, "No progress line");
  return {sub, [options] { return run(*options); }};
}

}  // namespace moe_bench::cli
