#include <fmt/format.h>

#include <algorithm>
#include <vector>

#include "format.hpp"
#include "moe_bench/report.hpp"

namespace moe_bench {

std::string render_markdown(const Report& report) {
  const SystemInfo& sys = report.system;
  int64_t ok = 0, failed = 0, skipped = 0;
  for (const Result& r : report.results) {
    ok += r.status == Status::kOk;
    failed += r.status == Status::kFailed;
    skipped += r.status == Status::kSkipped;
  }
  std::string out = "# moe-bench report\n\n## Summary\n\n";
  out += fmt::format("- {} results: {} ok, {} failed correctness, {} skipped\n",
                     report.results.size(), ok, failed, skipped);
  out += fmt::format("- cache mode: {}; every ok result matched the FP64 oracle\n",
                     to_string(report.cache));
  int64_t confident = 0;
  for (const Comparison& c : report.comparisons) confident += c.speedup.faster_with_confidence;
  out += fmt::format("- speed-ups: {} comparisons, {} faster with confidence\n",
                     report.comparisons.size(), confident);
  if (report.interrupted) out += "- **interrupted**: this report holds what finished\n";

  if (!report.checks.empty()) {
    out += "\n## Validation checklist\n\n| check | what | result | detail |\n|---|---|---|---|\n";
    for (const CheckLine& c : report.checks) {
      const char* mark = c.status == Status::kOk       ? "pass"
                         : c.status == Status::kFailed ? "**FAIL**"
                                                       : "skipped";
      out += fmt::format("| {} | {} | {} | {} |\n", c.group, c.name, mark, c.detail);
    }
  }

  out += "\n## Results\n\nTimes are per call of one layer forward; intervals are 95%.\n\n";
  out +=
      "| case | impl | status | median | median 95% CI | mean 95% CI | CV | tokens/s | "
      "GFLOP/s | GB/s | % roofline | bound | max rel err | n | outliers (mild/severe) |\n";
  out += "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const Result& r : report.results) {
    if (r.status != Status::kOk) {
      out += fmt::format("| {} | {} | {} | {} ||||||||||||\n", case_label(r.kase), r.impl,
                         to_string(r.status), r.reason);
      continue;
    }
    const char* unit = "";
    const double scale = time_scale(r.stats.median_s, &unit);
    out += fmt::format(
        "| {} | {} | ok | {:.3f} {} | {} | {} | {:.1f}% | {:.1f} | {:.1f} | {:.1f} | {} | "
        "{} | {:.2e} | {} | {}/{} |\n",
        case_label(r.kase), r.impl, r.stats.median_s * scale, unit,
        format_interval(r.stats.median_ci_s, scale, 3),
        format_interval(r.stats.mean_ci_s, scale, 3), r.stats.cv * 100, r.derived.tokens_per_s,
        r.derived.gflops, r.derived.gbytes_per_s, roofline_text(r.derived), r.derived.bound,
        r.correctness->max_rel_err, r.stats.n, r.stats.outliers_mild, r.stats.outliers_severe);
  }

  bool serving = false;
  for (const Result& r : report.results) serving |= r.serving.has_value();
  if (serving) {
    out +=
        "\n## Serving under load\n\nOpen-loop arrivals; latency from each request's scheduled "
        "arrival to the end of its batch (P99 with a 95% bootstrap interval).\n\n";
    out +=
        "| impl | offered req/s | served req/s | tokens/s | P50 ms | P99 ms [95% CI] | "
        "queue P99 ms | batch tokens mean/max | unserved | P99 within SLO |\n";
    out += "|---|---|---|---|---|---|---|---|---|---|\n";
    for (const Result& r : report.results) {
      if (!r.serving) continue;
      const ServingInfo& s = *r.serving;
      out += fmt::format(
          "| {} | {:.1f} | {:.1f} | {:.1f} | {:.3f} | {:.3f} [{:.3f}, {:.3f}] | {:.3f} | {:.1f}/{} "
          "| {} | {} ({:.3g} ms) |\n",
          r.impl, s.rate_rps, s.achieved_rps, s.tokens_per_s, s.p50_s * 1e3, s.p99_s * 1e3,
          s.p99_ci_s[0] * 1e3, s.p99_ci_s[1] * 1e3, s.queue_p99_s * 1e3, s.batch_tokens_mean,
          s.batch_tokens_max, s.unserved, s.meets_slo ? "yes" : "no", s.slo_s * 1e3);
    }
    out += "\n| impl | highest rate within the SLO |\n|---|---|\n";
    for (const ServingSummary& s : report.serving_summary) {
      out +=
          fmt::format("| {} | {} |\n", s.impl,
                      s.max_rate_at_slo_rps > 0 ? fmt::format("{:.1f} req/s", s.max_rate_at_slo_rps)
                                                : std::string("none tried"));
    }
  }

  bool ep = false;
  for (const Result& r : report.results) ep |= r.ep.has_value();
  if (ep) {
    out +=
        "\n## Expert parallelism\n\nMedians; each stage the slowest rank's in its step. The "
        "exchanges are the transfers inside dispatch and combine (through MPI shared-memory "
        "windows, or MPI_Alltoallv), against MPI_Alltoallv alone on the same counts in the same "
        "run, back to back as osu_alltoallv measures it.\n\n";
    out +=
        "| case | ranks | placement | step ms | route / dispatch / compute / combine ms | "
        "exchanges us (% of MPI_Alltoallv alone) | bytes sent per rank | rows per rank max/mean | "
        "one "
        "process ms | model ms (error) |\n";
    out += "|---|---|---|---|---|---|---|---|---|---|\n";
    for (const Result& r : report.results) {
      if (!r.ep || r.status != Status::kOk) continue;
      const EpInfo& e = *r.ep;
      const std::string model = ep_model_text(e, r.stats.median_s, "");
      const std::string share = e.exchange_pct_of_alltoall > 0
                                    ? fmt::format("{:.0f}%", e.exchange_pct_of_alltoall)
                                    : std::string("-");
      out += fmt::format(
          "| {} | {} | {}{} | {:.3f} | {:.3f} / {:.3f} / {:.3f} / {:.3f} | {:.1f} {} ({}) | {:.0f} "
          "| {:.2f} | {:.3f} | {} |\n",
          case_label(r.kase), e.ranks, e.placement,
          e.replicas > 0 ? fmt::format(" +{}", e.replicas) : std::string(), r.stats.median_s * 1e3,
          e.route_s * 1e3, e.dispatch_s * 1e3, e.compute_s * 1e3, e.combine_s * 1e3,
          (e.dispatch_exchange_s + e.combine_exchange_s) * 1e6, e.exchange, share,
          e.bytes_sent_per_rank, e.load_max_over_mean, e.single_process_s * 1e3, model);
    }
  }

  if (!report.comparisons.empty()) {
    out +=
        "\n## Speed-ups\n\nRatio of medians (B / A) with a 95% bootstrap interval; "
        "\"faster with confidence\" only when the whole interval is above 1.\n\n";
    out += "| case | A | B | speed-up of A over B | 95% CI | faster with confidence |\n";
    out += "|---|---|---|---|---|---|\n";
    for (const Comparison& c : report.comparisons) {
      out += fmt::format("| {} | {} | {} | {:.2f}x | {} | {} |\n", case_label(c.kase), c.a, c.b,
                         c.speedup.ratio, format_interval(c.speedup.ci, 1, 2),
                         c.speedup.faster_with_confidence ? "yes" : "no");
    }
  }

  // Cross-language: every implementation against the Python peers people would otherwise use.
  std::vector<std::string> peers;
  for (const char* peer : {"numpy", "torch"}) {
    for (const Comparison& c : report.comparisons) {
      if (c.b == peer) {
        peers.emplace_back(peer);
        break;
      }
    }
  }
  if (!peers.empty()) {
    out +=
        "\n## Cross-language comparison\n\nThe Python peers run in their own process on the same "
        "inputs, checked against the same oracle, and are timed there by the same protocol (not "
        "interleaved with the in-process implementations). Speed-up over each peer with its 95% "
        "interval.\n\n| case | impl | tokens/s |";
    for (const auto& p : peers) out += fmt::format(" over {} |", p);
    out += "\n|---|---|---|";
    for (size_t i = 0; i < peers.size(); ++i) out += "---|";
    out += "\n";
    for (const Result& r : report.results) {
      if (r.status != Status::kOk) continue;
      out +=
          fmt::format("| {} | {} | {:.1f} |", case_label(r.kase), r.impl, r.derived.tokens_per_s);
      for (const auto& p : peers) {
        std::string cell = r.impl == p ? "1 (itself)" : "-";
        for (const Comparison& c : report.comparisons) {
          if (c.a == r.impl && c.b == p && c.kase.shape == r.kase.shape &&
              c.kase.threads == r.kase.threads) {
            cell = fmt::format("{:.2f}x {}", c.speedup.ratio, format_interval(c.speedup.ci, 1, 2));
          }
        }
        out += " " + cell + " |";
      }
      out += "\n";
    }
  }

  bool any_stages = false;
  for (const Result& r : report.results) any_stages |= !r.stages.empty();
  if (any_stages) {
    out +=
        "\n## Stages\n\nMean time per call of each stage, where an implementation reports "
        "them.\n\n| case | impl | stages |\n|---|---|---|\n";
    for (const Result& r : report.results) {
      if (r.stages.empty()) continue;
      std::string stages;
      for (const StageTime& s : r.stages) {
        stages +=
            fmt::format("{}{} {}", stages.empty() ? "" : ", ", s.name, format_duration(s.seconds));
      }
      out += fmt::format("| {} | {} | {} |\n", case_label(r.kase), r.impl, stages);
    }
  }

  out += "\n## Environment\n\n";
  out +=
      fmt::format("- CPU: {} ({} logical CPUs; {})\n", sys.cpu_model, sys.logical_cpus, sys.caches);
  out += fmt::format("- features: {}{}\n", fmt::join(sys.features, ", "),
                     sys.isa_cap.empty() ? "" : fmt::format(" ({})", sys.isa_cap));
  out += fmt::format("- governor: {}, turbo: {}, load average at start: {:.2f}, {}\n", sys.governor,
                     sys.turbo, sys.load_average, steal_text(sys.steal_share));
  out += fmt::format("- memory: {:.1f} GiB total, {:.1f} GiB available\n",
                     static_cast<double>(sys.memory_total_bytes) / (1 << 30),
                     static_cast<double>(sys.memory_available_bytes) / (1 << 30));
  for (const Peaks& p : report.peaks) {
    out += fmt::format(
        "- measured peaks at {} threads: {:.1f} GFLOP/s FP32 FMA ({}){}, {:.1f} GB/s "
        "read\n",
        p.threads, p.fp32_gflops, p.fma_isa, bf16_peak(p), p.read_gbytes_per_s);
  }
  if (report.device_peaks) {
    out += fmt::format(
        "- measured on {}: {:.0f} GB/s device-to-device copy, {:.1f} TFLOP/s cuBLAS BF16 GEMM\n",
        report.device_peaks->device, report.device_peaks->copy_gbytes_per_s,
        report.device_peaks->bf16_tflops);
  }
  out += fmt::format("- OpenBLAS: {} kernel, {} threads, chosen by {}\n", sys.blas.core,
                     sys.blas.threads, sys.blas.chosen_by);
  out += fmt::format("- CUDA: {}\n", sys.cuda);
  std::vector<std::string> noted;
  for (const Result& r : report.results) {
    const std::string line = fmt::format("- {}: {}\n", r.impl, r.notes);
    if (!r.notes.empty() && std::find(noted.begin(), noted.end(), line) == noted.end()) {
      noted.push_back(line);
      out += line;
    }
  }
  out += fmt::format("- moe-bench {} ({}), {} build, {} {}\n", sys.tool_version, sys.git_commit,
                     sys.build_type, sys.compiler, sys.cxx_flags);

  out += "\n## Warnings\n\n";
  if (report.warnings.empty()) out += "None.\n";
  for (const auto& w : report.warnings) out += "- " + w + "\n";
  return out;
}

}  // namespace moe_bench
