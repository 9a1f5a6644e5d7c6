#include <fmt/format.h>

#include <algorithm>

#include "format.hpp"
#include "moe_bench/report.hpp"

namespace moe_bench {

std::string render_table(const Report& report) {
  const SystemInfo& sys = report.system;
  std::string out = fmt::format(
      "moe-bench {} ({} build) on {} | OpenBLAS {} kernel ({}) | cache {}\n", sys.tool_version,
      sys.build_type, sys.cpu_model, sys.blas.core, sys.blas.chosen_by, to_string(report.cache));
  if (!sys.isa_cap.empty()) out += fmt::format("instruction sets {}\n", sys.isa_cap);
  out += fmt::format("{:<34} {:<6} {:<7} {:>26} {:>10} {:>8} {:>7} {:>12} {:>9} {:>4}\n", "case",
                     "impl", "status", "median [95% CI]", "tokens/s", "GFLOP/s", "GB/s", "roofline",
                     "max rel", "n");
  for (const Result& r : report.results) {
    out += fmt::format("{:<34} {:<6} {:<7} ", case_label(r.kase), r.impl, to_string(r.status));
    if (r.status != Status::kOk) {
      out += r.reason + "\n";
      continue;
    }
    const char* unit = "";
    const double scale = time_scale(r.stats.median_s, &unit);
    const std::string median = fmt::format("{:.3f} {} {}", r.stats.median_s * scale, unit,
                                           format_interval(r.stats.median_ci_s, scale, 3));
    out += fmt::format("{:>26} {:>10.1f} {:>8.1f} {:>7.1f} {:>12} {:>9.2e} {:>4}\n", median,
                       r.derived.tokens_per_s, r.derived.gflops, r.derived.gbytes_per_s,
                       roofline_text(r.derived), r.correctness->max_rel_err, r.stats.n);
  }
  bool ep = false;
  for (const Result& r : report.results) ep |= r.ep.has_value() && r.status == Status::kOk;
  if (ep) {
    out += fmt::format("\n{:<34} {:>5} {:<13} {:>34} {:>30} {:>13} {:>11} {:>19}\n",
                       "expert-parallel (slowest rank)", "ranks", "placement",
                       "route/dispatch/compute/combine ms", "exchanges (of MPI_Alltoallv)",
                       "rows max/mean", "one process", "model (error)");
    for (const Result& r : report.results) {
      if (!r.ep || r.status != Status::kOk) continue;
      const EpInfo& e = *r.ep;
      const std::string stages =
          fmt::format("{:.3f}/{:.3f}/{:.3f}/{:.3f}", e.route_s * 1e3, e.dispatch_s * 1e3,
                      e.compute_s * 1e3, e.combine_s * 1e3);
      const double exchanges_us = (e.dispatch_exchange_s + e.combine_exchange_s) * 1e6;
      const std::string exchanges = e.exchange_pct_of_alltoall > 0
                                        ? fmt::format("{} {:.1f} us ({:.0f}%)", e.exchange,
                                                      exchanges_us, e.exchange_pct_of_alltoall)
                                        : fmt::format("{} {:.1f} us", e.exchange, exchanges_us);
      const std::string model = ep_model_text(e, r.stats.median_s, " ms");
      out += fmt::format("{:<34} {:>5} {:<13} {:>34} {:>30} {:>13.2f} {:>8.3f} ms {:>19}\n",
                         case_label(r.kase), e.ranks,
                         e.placement + (e.replicas > 0 ? fmt::format(" +{}", e.replicas) : ""),
                         stages, exchanges, e.load_max_over_mean, e.single_process_s * 1e3, model);
    }
  }
  if (!report.comparisons.empty()) {
    // As wide as the longest "A over B" (expert-parallel variants have long names).
    size_t wide = 16;
    for (const Comparison& c : report.comparisons) {
      wide = std::max(wide, c.a.size() + c.b.size() + 6);
    }
    out += fmt::format("\n{:<34} {:<{}} {:>8} {:>18}  {}\n", "case", "speed-up", wide, "median",
                       "95% CI", "faster with confidence");
    for (const Comparison& c : report.comparisons) {
      out += fmt::format("{:<34} {:<{}} {:>7.2f}x {:>18}  {}\n", case_label(c.kase),
                         c.a + " over " + c.b, wide, c.speedup.ratio,
                         format_interval(c.speedup.ci, 1, 2),
                         c.speedup.faster_with_confidence ? "yes" : "no");
    }
  }
  for (const auto& w : report.warnings) out += "warning: " + w + "\n";
  if (report.interrupted) out += "run interrupted: the results above are what finished\n";
  return out;
}

}  // namespace moe_bench
