#include <fmt/format.h>
#include <unistd.h>

#include <chrono>

#include "case_options.hpp"
#include "commands.hpp"
#include "moe_bench/error.hpp"
#include "moe_bench/harness.hpp"
#include "moe_bench/report.hpp"
#include "moe_bench/roofline.hpp"
#include "moe_bench/sysinfo.hpp"
#include "moe_bench/validate.hpp"
#include "registry.hpp"

namespace moe_bench::cli {
namespace {

struct ValidateOptions {
  bool quick = false, full = false, quiet = false;
  std::string json_path = "moe-bench-validate.json";
  std::string md_path = "moe-bench-validate.md";
  std::string blas_core;
};

const char* mark(Status s) {
  return s == Status::kOk ? "PASS" : s == Status::kFailed ? "FAIL" : "SKIP";
}

int validate(const ValidateOptions& o) {
  if (o.quick && o.full) throw UsageError("--quick and --full cannot be combined");
  for (const auto& path : {o.json_path, o.md_path}) check_writable(path);
  const ValidateLevel level = o.quick  ? ValidateLevel::kQuick
                              : o.full ? ValidateLevel::kFull
                                       : ValidateLevel::kDefault;
  interrupt_on_sigint();
  const auto start = std::chrono::steady_clock::now();

  Report report;
  report.system = system_info(registry().device());
  const SystemInfo& s = report.system;
  fmt::print("moe-bench validate{} | {} build {}\n",
             o.quick  ? " --quick"
             : o.full ? " --full"
                      : "",
             s.build_type, s.git_commit);
  fmt::print("machine: {} ({} logical CPUs; {}), {:.1f} GiB memory\n", s.cpu_model, s.logical_cpus,
             s.caches, static_cast<double>(s.memory_total_bytes) / (1 << 30));
  fmt::print("OpenBLAS: {} kernel, chosen by {}\nCUDA: {}\n", s.blas.core, s.blas.chosen_by,
             s.cuda);
  report.peaks.push_back(measure_peaks(cpu_count()));
  fmt::print("measured peaks ({} threads): {:.1f} GFLOP/s FP32 FMA ({}){}, {:.1f} GB/s read\n\n",
             report.peaks[0].threads, report.peaks[0].fp32_gflops, report.peaks[0].fma_isa,
             bf16_peak(report.peaks[0]), report.peaks[0].read_gbytes_per_s);
  std::fflush(stdout);

  const bool live = !o.quiet && isatty(STDERR_FILENO) != 0;
  run_validate(
      registry(), level, report,
      [](const CheckLine& line) {
        fmt::print("[{}] {:<11} {}{}\n", mark(line.status), line.group, line.name,
                   line.detail.empty() ? "" : ": " + line.detail);
        std::fflush(stdout);
      },
      live ? ProgressFn([](int64_t i, int64_t n, const std::string& what) {
        fmt::print(stderr, "\r\033[K[{}/{}] {}", i, n, what);
        if (i == n) fmt::print(stderr, "\r\033[K");
      })
           : ProgressFn{});
  finish_system_info(report.system);
  report.warnings = collect_warnings(report);
  write_file_atomically(o.json_path, render_json(report));
  write_file_atomically(o.md_path, render_markdown(report));

  int64_t passed = 0, failed = 0, skipped = 0;
  for (const CheckLine& c : report.checks) {
    passed += c.status == Status::kOk;
    failed += c.status == Status::kFailed;
    skipped += c.status == Status::kSkipped;
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  fmt::print("\n== summary ==\n{} checks: {} passed, {} failed, {} skipped ({:.0f} s)\n",
             report.checks.size(), passed, failed, skipped, seconds);
  fmt::print(
      "peaks (the highest measured: at the start and after every case): {:.1f} GFLOP/s FP32 FMA{}, "
      "{:.1f} GB/s read\n",
      report.peaks[0].fp32_gflops, bf16_peak(report.peaks[0]), report.peaks[0].read_gbytes_per_s);
  for (const Comparison& c : report.comparisons) {
    fmt::print("  {} over {} on {}: {:.2f}x [{:.2f}, {:.2f}]{}\n", c.a, c.b, case_label(c.kase),
               c.speedup.ratio, c.speedup.ci[0], c.speedup.ci[1],
               c.speedup.faster_with_confidence ? ", faster with confidence" : "");
  }
  for (const auto& w : report.warnings) fmt::print("warning: {}\n", w);
  fmt::print("reports: {} and {}\n", o.json_path, o.md_path);
  if (report.interrupted) {
    fmt::print("interrupted: the reports hold what finished\n");
    return 130;
  }
  fmt::print("{}\n", failed == 0 ? "result: OK" : "result: FAILED");
  return failed == 0 ? 0 : static_cast<int>(ExitCode::kCheckFailed);
}

}  // namespace

Command add_validate_command(CLI::App& app) {
  auto o = std::make_shared<ValidateOptions>();
  auto* sub = app.add_subcommand(
      "validate",
      "Check this machine and build: correctness grid, standard workloads, README claims");
  sub->add_flag("--quick", o->quick, "Under a minute: a smaller grid and the decode workloads");
  sub->add_flag("--full", o->full, "Also the real-model presets that fit in memory");
  sub->add_option("--json", o->json_path, "JSON report (default moe-bench-validate.json)");
  sub->add_option("--md", o->md_path, "Markdown report (default moe-bench-validate.md)");
  sub->add_option("--blas-core", o->blas_core, "OpenBLAS kernel: auto or a core name");
  add_max_isa_option(sub);
  sub->add_flag("--quiet,-q", o->quiet, "No progress line");
  return {sub, [o] { return validate(*o); }};
}

}  // namespace moe_bench::cli
