#include "moe_bench/harness.hpp"

#include <omp.h>

#include <chrono>
#include <fmt/format.h>

#include "moe_bench/correctness.hpp"
#include "moe_bench/problem.hpp"
#include "moe_bench/sysinfo.hpp"

namespace moe_bench {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

Derived derive(const Case& c, const Stats& st, const Load& load) {
  Derived d;
  if (st.median_s <= 0) return d;
  d.tokens_per_s = static_cast<double>(c.shape.tokens) / st.median_s;
  d.gflops = forward_flops(c.shape) / st.median_s * 1e-9;
  d.gbytes_per_s = forward_bytes(c.shape, c.dtype, load.active_experts) / st.median_s * 1e-9;
  return d;
}

Result run_one(const Case& c, const std::string& impl, const Problem& problem, const Oracle& oracle,
               const Load& load, const HarnessOptions& options) {
  Result r;
  r.kase = c;
  r.impl = impl;
  r.load = load;
  auto kernel = make_kernel(impl);
  if (auto why = kernel->unavailable_reason()) {
    r.reason = *why;
    return r;
  }
  if (auto why = kernel->can_run(c.shape, c.dtype)) {
    r.reason = *why;
    return r;
  }
  omp_set_num_threads(c.threads);
  set_blas_threads(c.threads);
  r.blas = blas_info();
  try {
    auto start = Clock::now();
    kernel->prepare(problem, c.threads);
    r.setup_s = seconds_since(start);
    kernel->run(0);
    r.correctness = oracle.check(kernel->output(), kernel->selected_experts());
    if (!r.correctness->pass) {
      r.status = Status::kFailed;
      r.reason = fmt::format("output differs from the FP64 oracle (max rel err {:.3g} > {:.3g}, "
                             "{} selection mismatches)",
                             r.correctness->max_rel_err, r.correctness->tolerance,
                             r.correctness->selection_mismatches);
      return r;
    }
    r.layers = static_cast<int64_t>(problem.layers.size());
    r.samples_s = time_calls(*kernel, r.layers, options.reps, options.warmup);
  } catch (const std::exception& e) {
    r.status = Status::kFailed;
    r.reason = fmt::format("{} threw: {}", impl, e.what());
    return r;
  }
  r.status = Status::kOk;
  r.stats = summarize(r.samples_s);
  r.derived = derive(c, r.stats, load);
  return r;
}

}  // namespace

std::string_view to_string(Status s) {
  switch (s) {
    case Status::kOk: return "ok";
    case Status::kFailed: return "failed";
    case Status::kSkipped: return "skipped";
  }
  return "?";
}

std::vector<double> time_calls(Kernel& kernel, int64_t layers, int reps, int warmup) {
  for (int i = 0; i < warmup; ++i) kernel.run(i % layers);
  std::vector<double> samples;
  samples.reserve(static_cast<size_t>(reps));
  for (int i = 0; i < reps; ++i) {
    auto start = Clock::now();
    kernel.run(i % layers);
    samples.push_back(seconds_since(start));
  }
  return samples;
}

std::vector<Result> run_cases(const std::vector<Case>& cases, const std::vector<std::string>& impls,
                              const HarnessOptions& options, const ProgressFn& progress) {
  std::vector<Result> results;
  const auto total = static_cast<int64_t>(cases.size() * impls.size());
  int64_t step = 0;
  for (const Case& c : cases) {
    omp_set_num_threads(c.threads);
    Problem problem = make_problem(c.shape, c.dtype, c.seed);
    Oracle oracle(problem, 0, options.oracle_flop_budget);
    Load load = oracle.load();
    for (const std::string& impl : impls) {
      if (progress) progress(step, total, impl);
      results.push_back(run_one(c, impl, problem, oracle, load, options));
      ++step;
    }
  }
  if (progress) progress(total, total, "done");
  return results;
}

}  // namespace moe_bench
