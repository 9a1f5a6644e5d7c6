// `moe-bench serve`: latency under load (DESIGN.md, "Serving under load"; docs/serving.md).
#include <fmt/format.h>

#include <algorithm>
#include <memory>

#include "case_options.hpp"
#include "commands.hpp"
#include "moe_bench/error.hpp"
#include "moe_bench/harness.hpp"
#include "moe_bench/kernel.hpp"
#include "moe_bench/plan.hpp"
#include "moe_bench/report.hpp"
#include "moe_bench/roofline.hpp"
#include "moe_bench/serving.hpp"
#include "moe_bench/sysinfo.hpp"
#include "registry.hpp"

namespace moe_bench::cli {
namespace {

struct ServeOptions {
  CaseOptions cases;
  std::vector<double> rates;
  std::string arrivals = "poisson", request_tokens = "1";
  double duration_s = 5, slo_s = 0.05, max_wait_s = 0.002;
  int64_t max_batch_tokens = 64;
  int bisect = 0;
  std::string json_path, md_path, format = "table";
  bool quiet = false;
};

std::string serving_table(const Report& report) {
  std::string out =
      fmt::format("{:<8} {:>9} {:>9} {:>10} {:>10} {:>22} {:>10} {:>7} {:>5}\n", "impl", "rate/s",
                  "served/s", "tokens/s", "P50", "P99 [95% CI]", "queue P99", "batch", "SLO");
  for (const Result& r : report.results) {
    if (!r.serving) {
      out += fmt::format("{:<8} {}: {}\n", r.impl, to_string(r.status), r.reason);
      continue;
    }
    const ServingInfo& s = *r.serving;
    out += fmt::format(
        "{:<8} {:>9.1f} {:>9.1f} {:>10.1f} {:>8.3f}ms {:>8.3f}ms [{:.3f}, {:.3f}] {:>8.3f}ms "
        "{:>7.1f} {:>5}{}\n",
        r.impl, s.rate_rps, s.achieved_rps, s.tokens_per_s, s.p50_s * 1e3, s.p99_s * 1e3,
        s.p99_ci_s[0] * 1e3, s.p99_ci_s[1] * 1e3, s.queue_p99_s * 1e3, s.batch_tokens_mean,
        s.meets_slo ? "yes" : "no",
        r.status == Status::kOk ? (s.unserved > 0 ? fmt::format(" ({} unserved)", s.unserved) : "")
                                : " " + r.reason);
  }
  out += "\nhighest rate within the SLO (P99 latency):\n";
  for (const ServingSummary& s : report.serving_summary) {
    out += fmt::format(
        "  {:<8} {}\n", s.impl,
        s.max_rate_at_slo_rps > 0
            ? fmt::format("{:.1f} requests/s at P99 <= {:.3g} ms", s.max_rate_at_slo_rps,
                          s.slo_s * 1e3)
            : fmt::format("none of the rates tried met P99 <= {:.3g} ms", s.slo_s * 1e3));
  }
  return out;
}

int serve(ServeOptions o) {
  // Everything that can be wrong with the input is found before any work or any file is made.
  for (double r : o.rates) {
    if (!(r > 0)) throw UsageError(fmt::format("--rate {} is not above 0", r));
  }
  if (!(o.slo_s > 0)) throw UsageError(fmt::format("--slo {} is not above 0", o.slo_s));
  if (!(o.duration_s > 0))
    throw UsageError(fmt::format("--duration {} is not above 0", o.duration_s));
  if (!(o.max_wait_s >= 0)) throw UsageError(fmt::format("--max-wait {} is below 0", o.max_wait_s));
  if (o.max_batch_tokens < 1) throw UsageError("--max-batch-tokens must be 1 or more");
  if (o.bisect < 0) throw UsageError("--bisect must be 0 or more");
  const ArrivalSpec arrivals = parse_arrivals(o.arrivals);
  const TokenDist sizes = parse_request_tokens(o.request_tokens);
  int64_t largest = sizes.hi;
  for (const auto& e : arrivals.trace) largest = std::max(largest, e.tokens);
  if (largest > o.max_batch_tokens) {
    throw UsageError(fmt::format("a request of {} tokens does not fit --max-batch-tokens {}",
                                 largest, o.max_batch_tokens));
  }
  for (double c : o.cases.axes.capacity_factor) {
    if (c > 0) {
      throw UsageError("serve runs dropless layers only: a capacity depends on the batch size");
    }
  }
  CaseOptions& co = o.cases;
  if (co.impls.empty()) co.impls = {"blas", "cpu"};
  co.axes.tokens = {o.max_batch_tokens};
  if (co.axes.workloads.empty() && co.axes.presets.empty() && co.axes.experts.empty() &&
      co.axes.d_model.empty()) {
    co.axes.workloads = {"A"};
  }
  const std::vector<Case> cases = plan_checked(co);
  if (cases.size() != 1) {
    throw UsageError(
        fmt::format("serve takes one shape, dtype and thread count ({} given)", cases.size()));
  }
  const Case& c = cases[0];
  const Format format = parse_format(o.format);
  for (const auto& path : {o.json_path, o.md_path}) {
    if (!path.empty()) check_writable(path);
  }

  interrupt_on_sigint();
  Report report;
  report.system = system_info(registry().device());
  report.peaks.push_back(measure_peaks(c.threads));
  for (const std::string& impl : co.impls) {
    auto kernel = co.harness.make(impl);
    Result skipped;
    skipped.kase = c;
    skipped.impl = impl;
    skipped.status = Status::kSkipped;
    if (auto why = kernel->unavailable_reason()) {
      skipped.reason = *why;
    } else if (auto no = kernel->refuses(c.shape, c.dtype)) {
      skipped.reason = *no;
    } else if (!kernel->runs_prefix()) {
      skipped.reason = "it cannot run batches of varying size (serve needs Kernel::run_prefix)";
    }
    if (!skipped.reason.empty()) {
      report.results.push_back(skipped);
      report.serving_summary.push_back({impl, 0, o.slo_s});
      continue;
    }
    if (!o.quiet) fmt::print(stderr, "serve: {}: preparing\n", impl);
    LayerServer server(std::move(kernel), c, layers_for(c, co.harness, {impl}), arrivals, sizes,
                       BatcherOptions{o.max_batch_tokens, o.max_wait_s, 0}, o.duration_s, o.slo_s);
    std::vector<double> rates = o.rates;
    if (arrivals.kind == ArrivalSpec::Kind::kTrace) {
      rates = {1.0};  // the trace's own times
    } else if (rates.empty()) {
      // No --rate: fractions of what back-to-back full batches allow, past it at the end.
      const double cap = server.capacity_rps();
      for (double f : {0.1, 0.25, 0.5, 0.75, 0.9, 1.1}) rates.push_back(cap * f);
    }
    double best = 0, lowest_fail = 0;
    for (double rate : rates) {
      if (interrupt_requested()) break;
      if (!o.quiet)
        fmt::print(stderr, "serve: {}: {:.1f} requests/s for {} s\n", impl, rate, o.duration_s);
      Result r = server.serve(rate);
      if (r.serving && r.status == Status::kOk) {
        if (r.serving->meets_slo) {
          best = std::max(best, r.serving->rate_rps);
        } else if (lowest_fail == 0 || r.serving->rate_rps < lowest_fail) {
          lowest_fail = r.serving->rate_rps;
        }
      }
      report.results.push_back(std::move(r));
    }
    // Bisection between the highest rate that met the SLO and the lowest above it that did not.
    for (int i = 0; i < o.bisect && best > 0 && lowest_fail > best && !interrupt_requested(); ++i) {
      const double mid = 0.5 * (best + lowest_fail);
      if (!o.quiet) fmt::print(stderr, "serve: {}: bisect {:.1f} requests/s\n", impl, mid);
      Result r = server.serve(mid);
      const bool met = r.serving && r.status == Status::kOk && r.serving->meets_slo;
      (met ? best : lowest_fail) = mid;
      report.results.push_back(std::move(r));
    }
    report.serving_summary.push_back({impl, best, o.slo_s});
  }
  if (interrupt_requested()) report.interrupted = true;
  finish_system_info(report.system);
  report.warnings = collect_warnings(report);
  return emit_report(report, format, o.json_path, o.md_path, serving_table(report));
}

}  // namespace

Command add_serve_command(CLI::App& app) {
  auto options = std::make_shared<ServeOptions>();
  ServeOptions& o = *options;
  auto* sub = app.add_subcommand(
      "serve", "Latency under load: open-loop arrivals, a batcher, P99 against a rate");
  Axes& a = o.cases.axes;
  sub->add_option("--impl", o.cases.impls, "Implementations (comma list; default: blas, cpu)")
      ->delimiter(',');
  sub->add_option("--preset", a.presets, "A real-model preset (see `list`)")->delimiter(',');
  sub->add_option("--workload", a.workloads, "A standard workload (default A)")->delimiter(',');
  sub->add_option("--experts", a.experts, "Experts E")->delimiter(',');
  sub->add_option("--top-k", a.top_k, "Experts per token k")->delimiter(',');
  sub->add_option("--d-model", a.d_model, "Model width d")->delimiter(',');
  sub->add_option("--d-ff", a.d_ff, "Expert width f")->delimiter(',');
  sub->add_option("--routing", a.routing, "Routing skew: uniform, zipf:S, hot:P")->delimiter(',');
  sub->add_option("--capacity-factor", a.capacity_factor,
                  "Must be 0: serving batches vary in size, and a capacity depends on it")
      ->delimiter(',');
  sub->add_option("--threads", a.threads, "Threads of the layer (default: all cores)")
      ->delimiter(',');
  sub->add_option("--dtype", a.dtypes, "Data type: f32, bf16, f16")->delimiter(',');
  sub->add_option("--weights", a.weights, "Expert weight format: same (the --dtype), int8, q4")
      ->delimiter(',');
  sub->add_option("--activation", a.activation, "Expert activation: swiglu, gelu, swiglu_oai");
  sub->add_option("--seed", a.seed, "Seed of the data and of the arrivals")
      ->check(seed_validator());
  sub->add_option("--cache", o.cases.cache, "cold (default) or warm, as in run");
  sub->add_option("--blas-core", o.cases.blas_core, "OpenBLAS kernel, as in run");
  add_max_isa_option(sub);
  sub->add_option("--rate", o.rates,
                  "Requests per second (comma list; default: 10% to 110% of what back-to-back "
                  "full batches allow)")
      ->delimiter(',');
  sub->add_option("--arrivals", o.arrivals, "poisson (default), gamma:CV or trace:FILE (JSONL)");
  sub->add_option("--request-tokens", o.request_tokens, "Tokens per request: N or uniform:A:B");
  sub->add_option("--duration", o.duration_s, "Seconds of arrivals per rate (default 5)");
  sub->add_option("--slo", o.slo_s, "P99 latency bound in seconds (default 0.05)");
  sub->add_option("--max-batch-tokens", o.max_batch_tokens, "Tokens per batch at most (64)");
  sub->add_option("--max-wait", o.max_wait_s,
                  "Seconds a short batch waits for more requests (default 0.002)");
  sub->add_option("--bisect", o.bisect,
                  "Refine the highest rate within the SLO by this many bisection runs");
  sub->add_option("--json", o.json_path, "Write the JSON report to FILE");
  sub->add_option("--md", o.md_path, "Write the Markdown report to FILE");
  sub->add_option("--format", o.format, "Standard output: table, json, jsonl, csv, md");
  sub->add_flag("--quiet,-q", o.quiet, "No progress lines");
  return {sub, [options] {
            ServeOptions copy = *options;
            return serve(copy);
          }};
}

}  // namespace moe_bench::cli
