#include <fmt/format.h>

#include "moe_bench/report.hpp"

namespace moe_bench {
namespace {

std::string case_label(const Case& c) {
  const Shape& s = c.shape;
  std::string label = s.preset.empty()
                          ? fmt::format("E{} k{} d{} f{}", s.experts, s.top_k, s.d_model, s.d_ff)
                          : s.preset;
  label += fmt::format(" T={}", s.tokens);
  if (s.skew.kind != Skew::Kind::kUniform) label += " " + to_string(s.skew);
  if (s.capacity_factor > 0) label += fmt::format(" C={:g}", s.capacity_factor);
  return label;
}

std::string duration(double s) {
  if (s <= 0) return "-";
  if (s < 1e-3) return fmt::format("{:.1f} us", s * 1e6);
  if (s < 1) return fmt::format("{:.3f} ms", s * 1e3);
  return fmt::format("{:.3f} s", s);
}

}  // namespace

std::string render_table(const Report& report) {
  const SystemInfo& sys = report.system;
  std::string out = fmt::format("moe-bench {} ({} build) on {} | OpenBLAS {} kernel, chosen by {}\n",
                                sys.tool_version, sys.build_type, sys.cpu_model, sys.blas.core,
                                sys.blas.chosen_by);
  out += fmt::format("{:<34} {:<6} {:<7} {:>11} {:>12} {:>9} {:>8} {:>10} {:>4}\n", "case", "impl",
                     "status", "median", "tokens/s", "GFLOP/s", "GB/s", "max rel", "n");
  for (const Result& r : report.results) {
    out += fmt::format("{:<34} {:<6} {:<7} ", case_label(r.kase), r.impl, to_string(r.status));
    if (r.status == Status::kOk) {
      out += fmt::format("{:>11} {:>12.1f} {:>9.1f} {:>8.1f} {:>10.2e} {:>4}\n",
                         duration(r.stats.median_s), r.derived.tokens_per_s, r.derived.gflops,
                         r.derived.gbytes_per_s, r.correctness->max_rel_err, r.stats.n);
    } else {
      out += r.reason + "\n";
    }
  }
  if (report.interrupted) out += "run interrupted: the results above are what finished\n";
  return out;
}

}  // namespace moe_bench
