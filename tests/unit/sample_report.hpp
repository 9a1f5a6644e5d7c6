#pragma once

#include "moe_bench/report.hpp"

namespace moe_bench::testing {

/// A fixed report with every kind of result, for the exporters' golden files.
inline Report sample_report() {
  Report report;
  SystemInfo& s = report.system;
  s.cpu_model = "Test CPU";
  s.features = {"avx2", "avx512f"};
  s.logical_cpus = 2;
  s.caches = "L1d 48K, L2 1024K, L3 32768K";
  s.governor = "performance";
  s.turbo = "on";
  s.load_average = 0.25;
  s.memory_total_bytes = int64_t{16} << 30;
  s.memory_available_bytes = int64_t{12} << 30;
  s.tool_version = "0.1.0";
  s.git_commit = "abc123";
  s.build_type = "Release";
  s.compiler = "gcc 12.2.0";
  s.cxx_flags = "-O3 -DNDEBUG";
  s.blas = {"SkylakeX", 2, "moe-bench (CPU features)", false};
  s.cuda = "no CUDA device";
  report.peaks = {{2, 500.0, 50.0, "avx512"}};

  Result ok;
  ok.kase.shape.tokens = 4;
  ok.kase.threads = 2;
  ok.impl = "blas";
  ok.status = Status::kOk;
  ok.correctness = Correctness{true, 1e-7, 2e-7, 1e-14, 1e-4, 4, 1, 0, 0};
  ok.samples_s = {0.002, 0.001, 0.003, 0.002, 0.0025};
  ok.stats = summarize(ok.samples_s);
  ok.derived = {2000, 1.5, 30.0, 60.0, "memory"};
  ok.load.tokens_per_expert = {1, 2, 0, 5, 0, 0, 0, 0};
  ok.load.imbalance = 4.0;
  ok.load.active_experts = 3;
  ok.blas = s.blas;
  ok.setup_s = 0.01;
  ok.layers = 3;
  ok.inner_reps = 2;
  ok.stages = {{"route", 0.0001}, {"experts", 0.0019}};

  Result naive = ok;
  naive.impl = "naive";
  naive.samples_s = {0.008, 0.009, 0.008, 0.0085, 0.0082};
  naive.stats = summarize(naive.samples_s);
  naive.stages.clear();

  Result skipped;
  skipped.kase = ok.kase;
  skipped.impl = "cuda";
  skipped.reason = "no CUDA device, \"really\"";

  Result failed = ok;
  failed.impl = "broken";
  failed.status = Status::kFailed;
  failed.reason = "output differs from the FP64 oracle";
  failed.correctness->pass = false;
  failed.samples_s.clear();
  failed.stats = {};
  failed.derived = {};

  report.results = {naive, ok, skipped, failed};
  report.comparisons = {{ok.kase, "naive", "blas", speedup(naive.samples_s, ok.samples_s)}};
  report.warnings = collect_warnings(report);
  return report;
}

}  // namespace moe_bench::testing
