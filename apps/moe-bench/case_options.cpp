#include "case_options.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdlib>

#include "moe_bench/error.hpp"
#include "moe_bench/sysinfo.hpp"
#include "registry.hpp"

namespace moe_bench::cli {
namespace {

void on_sigint(int) { request_interrupt(); }

}  // namespace

void interrupt_on_sigint() { std::signal(SIGINT, on_sigint); }

void add_case_options(CLI::App* sub, CaseOptions& o) {
  Axes& a = o.axes;
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
  sub->add_option("--weights", a.weights,
                  "Expert weight formats (comma list): same (the --dtype), int8 (per output "
                  "channel), q4 (4-bit, groups of 32); activations stay in --dtype")
      ->delimiter(',');
  sub->add_option("--activation", a.activation, "Expert activation: swiglu, gelu, swiglu_oai");
  sub->add_option("--seed", a.seed, "Seed of the generated data")->check(seed_validator());
  sub->add_option("--timing-seed", o.harness.seed, "Seed of the interleaving and the bootstrap")
      ->check(seed_validator());
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
  // Acted on in main before parsing (OpenBLAS reads its kernel choice at load time).
  sub->add_option("--blas-core", o.blas_core,
                  "OpenBLAS kernel: auto (best for this CPU) or a core name; default: "
                  "OPENBLAS_CORETYPE when set, else auto");
  add_max_isa_option(sub);
}

CLI::Validator seed_validator() {
  // CLI11 converts "-1" into an unsigned seed by wrapping it to 2^64 - 1: refused as typed.
  return CLI::Validator(
      [](std::string& v) -> std::string {
        const bool digits = !v.empty() && v.find_first_not_of("0123456789") == std::string::npos;
        return digits ? std::string()
                      : fmt::format("'{}' is not a seed: a whole number from 0 to 2^64 - 1", v);
      },
      "SEED");
}

void add_max_isa_option(CLI::App* sub) {
  sub->add_option_function<std::string>(
         "--max-isa",
         [](const std::string& v) {
           if (!parse_isa(v)) {
             throw UsageError(fmt::format("--max-isa '{}' is not one of {}", v, isa_names()));
           }
         },
         fmt::format("Run as a CPU of this class would: {} (default: MOE_BENCH_MAX_ISA, else "
                     "this CPU's own); the blas and peer libraries follow",
                     isa_names()))
      ->envname("MOE_BENCH_MAX_ISA");
}

std::vector<Case> plan_checked(CaseOptions& o, int processes) {
  const bool named = !o.impls.empty();
  if (!named) o.impls = registry().default_names();
  for (const auto& name : o.impls) {
    auto kernel = make_kernel(name);
    if (named) {
      if (auto why = kernel->unavailable_reason()) {
        throw EnvironmentError(fmt::format("implementation '{}' cannot run here: {}", name, *why));
      }
    }
  }
  HarnessOptions& h = o.harness;
  if (o.cache != "cold" && o.cache != "warm") {
    throw UsageError(fmt::format("unknown cache mode '{}' (known: cold, warm)", o.cache));
  }
  h.cache = o.cache == "warm" ? CacheMode::kWarm : CacheMode::kCold;
  if (h.reps < 1 || h.warmup < 0 || !(h.min_time_s >= 0) || !(h.max_time_s > 0) ||
      !(h.min_sample_s >= 0)) {
    throw UsageError("--reps must be >= 1, --warmup >= 0, --min-time >= 0, --max-time > 0");
  }
  h.make = make_kernel;
  Axes axes = o.axes;
  axes.extra_weight_copies = processes * (1 + registry().extra_weight_copies(o.impls)) - 1;
  return plan_cases(axes);
}

namespace {

template <typename T>
std::string joined(const std::vector<T>& values) {
  return fmt::format("{}", fmt::join(values, ","));
}

}  // namespace

std::vector<std::string> case_arguments(const CaseOptions& o) {
  const Axes& a = o.axes;
  const HarnessOptions& h = o.harness;
  std::vector<std::string> args;
  const std::pair<const char*, std::string> lists[] = {
      {"--impl", joined(o.impls)},         {"--preset", joined(a.presets)},
      {"--workload", joined(a.workloads)}, {"--experts", joined(a.experts)},
      {"--top-k", joined(a.top_k)},        {"--d-model", joined(a.d_model)},
      {"--d-ff", joined(a.d_ff)},          {"--tokens", joined(a.tokens)},
      {"--routing", joined(a.routing)},    {"--capacity-factor", joined(a.capacity_factor)},
      {"--threads", joined(a.threads)},    {"--dtype", joined(a.dtypes)},
      {"--weights", joined(a.weights)}};
  for (const auto& [flag, value] : lists) {
    if (!value.empty()) args.insert(args.end(), {flag, value});
  }
  if (a.activation) args.insert(args.end(), {"--activation", *a.activation});
  args.insert(args.end(), {"--seed", fmt::format("{}", a.seed), "--reps", fmt::format("{}", h.reps),
                           "--min-time", fmt::format("{}", h.min_time_s), "--max-time",
                           fmt::format("{}", h.max_time_s), "--min-sample-time",
                           fmt::format("{}", h.min_sample_s), "--warmup",
                           fmt::format("{}", h.warmup), "--cache", o.cache});
  // Both builds of a comparison must run the same OpenBLAS kernel.
  args.insert(args.end(), {"--blas-core", o.blas_core.empty() ? "auto" : o.blas_core});
  return args;
}

// A live "case i/N" line with an ETA on a terminal; elsewhere (a log, a script waiting for a case
// to start timing) one line per step. Nothing under --quiet.
ProgressFn progress_lines(bool enabled) {
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

InjectedSlowdown parse_slowdown(const std::string& spec) {
  if (spec.empty()) return {};
  const auto colon = spec.find(':');
  InjectedSlowdown s;
  s.impl = spec.substr(0, colon);
  char* end = nullptr;
  if (colon != std::string::npos) s.fraction = std::strtod(spec.c_str() + colon + 1, &end);
  if (colon == std::string::npos || end == nullptr || *end != '\0' || !(s.fraction > 0) ||
      !(s.fraction < 10)) {
    throw UsageError(
        fmt::format("--inject-slowdown '{}': expected IMPL:FRACTION, e.g. cpu:0.1", spec));
  }
  return s;
}

int emit_report(const Report& report, Format format, const std::string& json_path,
                const std::string& md_path, const std::string& table) {
  if (format != Format::kTable || !table.empty()) {
    for (const auto& w : report.warnings) fmt::print(stderr, "warning: {}\n", w);
  }
  fmt::print("{}", format == Format::kTable && !table.empty() ? table : render(report, format));
  if (!json_path.empty()) write_file_atomically(json_path, render_json(report));
  if (!md_path.empty()) write_file_atomically(md_path, render_markdown(report));
  if (report.interrupted) return 130;
  for (const Result& r : report.results) {
    if (r.status == Status::kFailed) return static_cast<int>(ExitCode::kCheckFailed);
  }
  return static_cast<int>(ExitCode::kOk);
}

}  // namespace moe_bench::cli
