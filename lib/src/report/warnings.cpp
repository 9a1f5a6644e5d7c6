#include <fmt/format.h>

#include <set>

#include "moe_bench/harness.hpp"
#include "moe_bench/presets.hpp"
#include "moe_bench/report.hpp"
#include "moe_bench/sysinfo.hpp"

namespace moe_bench {

namespace {
constexpr double kNoisyCv = 0.05;
// A share of CPU time taken by the hypervisor above which timings are not to be trusted alone.
constexpr double kStealWarn = 0.02;
}  // namespace

std::string case_label(const Case& c) {
  const Shape& s = c.shape;
  std::string label = s.preset.empty()
                          ? fmt::format("E{} k{} d{} f{}", s.experts, s.top_k, s.d_model, s.d_ff)
                          : s.preset;
  if (!s.preset.empty()) {
    // Axis flags given with a preset override its sizes: say which.
    for (const Preset& p : presets()) {
      if (p.name != s.preset) continue;
      if (s.experts != p.shape.experts) label += fmt::format(" E{}", s.experts);
      if (s.top_k != p.shape.top_k) label += fmt::format(" k{}", s.top_k);
      if (s.d_model != p.shape.d_model) label += fmt::format(" d{}", s.d_model);
      if (s.d_ff != p.shape.d_ff) label += fmt::format(" f{}", s.d_ff);
    }
  }
  label += fmt::format(" T={}", s.tokens);
  if (s.skew.kind != Skew::Kind::kUniform) label += " " + to_string(s.skew);
  if (s.capacity_factor > 0) label += fmt::format(" C={:g}", s.capacity_factor);
  if (c.dtype != Dtype::kF32) label += fmt::format(" {}", to_string(c.dtype));
  if (s.weights != WeightFormat::kSame) label += fmt::format(" w:{}", to_string(s.weights));
  return label;
}

std::vector<std::string> collect_warnings(const Report& report) {
  std::vector<std::string> w;
  const SystemInfo& s = report.system;
  if (s.build_type != "Release" && s.build_type != "RelWithDebInfo") {
    w.push_back(fmt::format("{} build: timings are not representative", s.build_type));
  }
  if (s.blas.fallback) {
    w.push_back(
        fmt::format("OpenBLAS runs its {} kernel (chosen by {}), slower than this CPU "
                    "supports ({}): the blas baseline is not at its best; pass "
                    "--blas-core auto",
                    s.blas.core, s.blas.chosen_by, best_blas_core(cpu_features())));
  }
  if (s.logical_cpus > 0 && s.load_average >= 0.5 * s.logical_cpus) {
    w.push_back(fmt::format("busy machine: load average {:.2f} on {} CPUs when the run started",
                            s.load_average, s.logical_cpus));
  }
  if (s.steal_share > kStealWarn) {
    w.push_back(
        fmt::format("hypervisor steal: {:.1f}% of CPU time went to other guests during "
                    "the run (above {:.0f}%): timings are noisy",
                    s.steal_share * 100, kStealWarn * 100));
  }
  for (const Result& r : report.results) {
    if (r.status == Status::kOk && r.stats.cv > kNoisyCv) {
      w.push_back(fmt::format("noisy: {} on {} has CV {:.1f}% (above {:.0f}%)", r.impl,
                              case_label(r.kase), r.stats.cv * 100, kNoisyCv * 100));
    }
  }
  for (const Result& r : report.results) {
    if (r.status == Status::kOk && r.derived.over_ceiling()) {
      w.push_back(fmt::format(
          "over ceiling: {} on {} ran at {:.0f}% of its {} ceiling: the peak was measured low "
          "(another process busy) or the data came from a cache; its roofline figure is not "
          "a result",
          r.impl, case_label(r.kase), r.derived.roofline_pct, r.derived.bound));
    }
  }
  // Cold cases whose round stayed under four times the last-level cache (memory allowed no more
  // layers, cold_layers, or fewer experts were reached than expected): part of the weights may
  // have come from the cache. Once a case.
  const int64_t llc = largest_cache_bytes(s.caches);
  std::set<std::string> partly_warm;
  for (const Result& r : report.results) {
    if (report.cache != CacheMode::kCold || llc <= 0 || r.status != Status::kOk || r.device_timed ||
        r.layers <= 0 || r.layers >= kMaxColdLayers || r.round_bytes <= 0 ||
        r.round_bytes >= 4.0 * static_cast<double>(llc)) {
      continue;
    }
    const std::string label = case_label(r.kase);
    if (!partly_warm.insert(label).second) continue;
    w.push_back(fmt::format(
        "partly warm: {} rotates {} layer{} of weights, {:.0f} MB a round, under four times the "
        "{:.0f} MB last-level cache: some weights may come from the cache",
        label, r.layers, r.layers == 1 ? "" : "s", r.round_bytes * 1e-6,
        static_cast<double>(llc) * 1e-6));
  }
  if (report.interrupted) w.push_back("interrupted: the report holds what finished");
  return w;
}

}  // namespace moe_bench
