#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <memory>

#include "baselines/python/python_peer.hpp"
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
  Axes axes;
  std::vector<std::string> impls;
  HarnessOptions harness;
  std::string cache = "cold";
  std::string json_path, md_path;
  std::string format = "table";
  std::string blas_core, python;
  bool quiet = false;
};

// A live "case i/N" line with an ETA on a terminal; elsewhere (a log, a script waiting for a case
// to start timing) one line per step. Nothing under --quiet.
ProgressFn progress_line(bool enabled) {
  if (!enabled) return {};
  auto start = std::chrono::steady_clock::now();
  const bool live = isatty(STDERR_FILENO) != 0;
  return [start, live](int64_t step, int64_t total, const std::string& what) {
    double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::string eta = step > 0 && step < total
                          ? fmt::format(", ETA {:.0f} s", elapsed / static_cast<double>(step) *
                                                              static_cast<double>(total - step))
                          : "";
    if (!live) {
      fmt::print(stderr, "[{}/{}] {}{}\n", step, total, what, eta);
      return;
    }
    fmt::print(stderr, "\r\033[K[{}/{}] {}{}", step, total, what, eta);
    if (step == total) fmt::print(stderr, "\r\033[K");
  };
}

void on_sigint(int) { request_interrupt(); }

int run(const RunOptions& o) {
  // Everything that can be wrong with the input is found before any work or any file is made.
  if (!o.python.empty()) python::set_interpreter(o.python);
  std::vector<std::string> impls = o.impls.empty() ? registry().default_names() : o.impls;
  for (const auto& name : impls) {
    auto kernel = make_kernel(name);
    if (!o.impls.empty()) {
      if (auto why = kernel->unavailable_reason()) {
        throw EnvironmentError(fmt::format("implementation '{}' cannot run here: {}", name, *why));
      }
    }
  }
  Axes axes = o.axes;
  axes.extra_weight_copies = registry().extra_weight_copies(impls);
  std::vector<Case> cases = plan_cases(axes);
  const Format format = parse_format(o.format);
  HarnessOptions h = o.harness;
  h.make = make_kernel;
  if (o.cache != "cold" && o.cache != "warm") {
    throw UsageError(fmt::format("unknown cache mode '{}' (known: cold, warm)", o.cache));
  }
  h.cache = o.cache == "warm" ? CacheMode::kWarm : CacheMode::kCold;
  if (h.reps < 1 || h.warmup < 0 || !(h.min_time_s >= 0) || !(h.max_time_s > 0) ||
      !(h.min_sample_s >= 0)) {
    throw UsageError("--reps must be >= 1, --warmup >= 0, --min-time >= 0, --max-time > 0");
  }
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
  run_cases(cases, impls, h, report, progress_line(!o.quiet));
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
  Axes& a = o.axes;
  auto* sub = app.add_subcommand("run", "Run, check and time MoE layer forwards");
  sub->add_option("--impl", o.impls, "Implementations (comma list; default: naive, blas, cpu)")
      ->delimiter(',');
  sub->add_option("--preset", a.presets, "Real-model presets (comma list, see `list`)")
      ->delimiter(',');
  sub->add_option("--workload", a.workloads,
                  "Standard workloads A, B (default when no shape is given)")
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
  sub->add_option("--dtype", a.dtypes, "Data types (comma list): f32, bf16, f16")->delimiter(',');
  sub->add_option("--activation", a.activation, "Expert activation: swiglu, gelu, swiglu_oai");
  sub->add_option("--seed", a.seed, "Seed of the generated data");
  sub->add_option("--timing-seed", o.harness.seed, "Seed of the interleaving and the bootstrap");
  sub->add_option("--reps", o.harness.reps, "At least this many samples per result (default 20)");
  sub->add_option("--min-time", o.harness.min_time_s,
                  "And at least this many seconds of sampling per case (default 0.5)");
  sub->add_option("--max-time", o.harness.max_time_s,
                  "But stop sampling a case after this many seconds (default 30)");
  sub->add_option("--min-sample-time", o.harness.min_sample_s,
                  "Inner repetitions make each sample at least this long (default 0.005 s)");
  sub->add_option("--warmup", o.harness.warmup, "Untimed calls before calibration (default 1)");
  sub->add_option("--settle-time", o.harness.settle_s,
                  "Pause before a sample of another implementation (default 0.003 s)");
  sub->add_option("--cache", o.cache,
                  "cold (default): rotate independent layers so weights come from memory; "
                  "warm: repeat one layer");
  sub->add_option("--baseline", o.harness.baselines,
                  "Speed-ups are of each implementation over these (comma list; default "
                  "blas,numpy,torch, those present)")
      ->delimiter(',');
  sub->add_option("--python", o.python, "Interpreter of the numpy and torch peers");
  sub->add_option("--json", o.json_path, "Write the JSON report to FILE");
  sub->add_option("--md", o.md_path, "Write the Markdown report to FILE");
  sub->add_option("--format", o.format, "Standard output: table, json, jsonl, csv, md");
  // Acted on in main before parsing (OpenBLAS reads its kernel choice at load time).
  sub->add_option("--blas-core", o.blas_core,
                  "OpenBLAS kernel: auto (best for this CPU) or a core name; default: "
                  "OPENBLAS_CORETYPE when set, else auto");
  sub->add_flag("--quiet,-q", o.quiet, "No progress line");
  return {sub, [options] { return run(*options); }};
}

}  // namespace moe_bench::cli
