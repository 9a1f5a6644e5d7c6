#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <memory>

#include "baselines/python/python_peer.hpp"
#include "case_options.hpp"
#include "commands.hpp"
#include "lib/ep/ep.hpp"
#include "moe_bench/ep_model.hpp"
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
  CaseOptions cases;
  std::string json_path, md_path;
  std::string format = "table";
  std::string python;
  bool quiet = false;
  ep::EpOptions ep;
  std::string ep_model_path;
  bool ep_set = false, placement_set = false;
};

// One line of output and the exit code, shared by the single-process and the EP runs.
int finish_report(const RunOptions& o, Report& report, Format format) {
  finish_system_info(report.system);
  report.warnings = collect_warnings(report);
  return emit_report(report, format, o.json_path, o.md_path);
}

// `mpirun -np N moe-bench run --ep N ...`: every rank plans the same cases; rank 0 reports.
int run_ep(const RunOptions& o) {
  if (const std::string why = ep::unavailable_reason(); !why.empty()) throw EnvironmentError(why);
  if (o.ep.ranks < 1) throw UsageError(fmt::format("--ep {} is below 1", o.ep.ranks));
  if (o.ep.replicas < -1) throw UsageError(fmt::format("--replicas {} is below 0", o.ep.replicas));
  RunOptions checked = o;
  CaseOptions& co = checked.cases;
  if (co.impls.empty()) co.impls = {"cpu"};
  if (co.impls.size() != 1) {
    throw UsageError("--ep runs one implementation at a time (--impl cpu)");
  }
  if (!registry().make(co.impls[0])->splits_routing()) {
    throw UsageError(fmt::format(
        "{} cannot run expert-parallel: it does not split routing from its experts (cpu does)",
        co.impls[0]));
  }
  if (co.axes.threads.empty()) co.axes.threads = {ep::default_threads(o.ep.ranks)};
  const std::vector<Case> cases = plan_checked(co, o.ep.ranks);
  const Format format = parse_format(o.format);
  ep::EpOptions ep = o.ep;
  if (!o.ep_model_path.empty()) {
    ep.model = load_ep_model(o.ep_model_path);
    for (const Case& c : cases) {
      if (ep::calibration_for(ep, c) == nullptr) {
        throw UsageError(fmt::format(
            "--ep-model {} has no calibration for {} with {} tokens and {} threads per rank: "
            "calibrate on 1- and 2-rank runs of that shape (scripts/ep-model.py --save)",
            o.ep_model_path, case_label(c), c.shape.tokens, c.threads));
      }
    }
  }
  ep::Session session;
  if (session.size() != o.ep.ranks) {
    throw UsageError(fmt::format(
        "--ep {} but {} MPI process{} started: launch it as mpirun -np {} moe-bench run --ep {} "
        "...",
        o.ep.ranks, session.size(), session.size() == 1 ? "" : "es", o.ep.ranks, o.ep.ranks));
  }
  ep.exchanges = ep::resolve_exchanges(o.ep.exchanges);
  const bool lead = session.rank() == 0;
  // Output paths are checked by rank 0 only (it alone writes), before any work.
  if (lead) {
    for (const auto& path : {o.json_path, o.md_path}) {
      if (!path.empty()) check_writable(path);
    }
  }
  interrupt_on_sigint();
  Report report;
  try {
    // Peaks on rank 0 for every rank's threads together, the others waiting without spinning.
    if (lead) {
      report.system = system_info(registry().device());
      std::vector<int> threads;
      for (const Case& c : cases) {
        const int t = c.threads * o.ep.ranks;
        if (std::find(threads.begin(), threads.end(), t) == threads.end()) threads.push_back(t);
      }
      for (int t : threads) report.peaks.push_back(measure_peaks(t));
    }
    ep::quiet_barrier();
    ep::run_cases(session, cases, co.impls[0], co.harness, ep, report,
                  progress_lines(lead && !o.quiet));
    if (lead) {
      for (Peaks& p : report.peaks) keep_higher(p, measure_peaks(p.threads));
    }
    ep::quiet_barrier();
  } catch (const std::exception& e) {
    session.abort(e.what(), static_cast<int>(ExitCode::kEnvironment));
  }
  if (!lead) return static_cast<int>(ExitCode::kOk);
  refresh_derived(report);
  return finish_report(o, report, format);
}

// This process's rank as mpirun set it in the environment (before MPI is initialised), or -1.
int launched_rank() {
  for (const char* var : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"}) {
    if (const char* v = std::getenv(var)) return std::atoi(v);
  }
  return -1;
}

int run(const RunOptions& o) {
  if (o.ep_set) {
    // Input found wrong before MPI starts is found by every rank alike: rank 0 alone says so.
    try {
      return run_ep(o);
    } catch (const UsageError&) {
      if (launched_rank() > 0) return static_cast<int>(ExitCode::kUsage);
      throw;
    } catch (const EnvironmentError&) {
      if (launched_rank() > 0) return static_cast<int>(ExitCode::kEnvironment);
      throw;
    }
  }
  if (o.placement_set)
    throw UsageError("--placement, --replicas, --ep-exchange and --ep-model need --ep N");
  // Everything that can be wrong with the input is found before any work or any file is made.
  if (!o.python.empty()) python::set_interpreter(o.python);
  RunOptions checked = o;
  const std::vector<Case> cases = plan_checked(checked.cases);
  const std::vector<std::string>& impls = checked.cases.impls;
  const HarnessOptions& h = checked.cases.harness;
  const Format format = parse_format(o.format);
  for (const auto& path : {o.json_path, o.md_path}) {
    if (!path.empty()) check_writable(path);
  }

  interrupt_on_sigint();
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
  run_cases(cases, impls, h, report, progress_lines(!o.quiet));
  for (Peaks& p : report.peaks) keep_higher(p, measure_peaks(p.threads));  // measured again
  refresh_derived(report);
  return finish_report(o, report, format);
}

}  // namespace

Command add_run_command(CLI::App& app) {
  auto options = std::make_shared<RunOptions>();
  RunOptions& o = *options;
  auto* sub = app.add_subcommand("run", "Run, check and time MoE layer forwards");
  add_case_options(sub, o.cases);
  sub->add_option("--baseline", o.cases.harness.baselines,
                  "Speed-ups are of each implementation over these (comma list; default "
                  "blas,numpy,torch,ipex, those present)")
      ->delimiter(',');
  sub->add_option("--python", o.python, "Interpreter of the numpy and torch peers");
  sub->add_option("--json", o.json_path, "Write the JSON report to FILE");
  sub->add_option("--md", o.md_path, "Write the Markdown report to FILE");
  sub->add_option("--format", o.format, "Standard output: table, json, jsonl, csv, md");
  sub->add_flag("--quiet,-q", o.quiet, "No progress line");
  sub->add_option("--ep", o.ep.ranks,
                  "Expert-parallel over N MPI ranks (mpirun -np N moe-bench run --ep N); "
                  "--tokens counts each rank's tokens")
      ->each([&o](const std::string&) { o.ep_set = true; });
  sub->add_option("--placement", o.ep.placements,
                  "Where experts live with --ep: contiguous, round-robin, load-aware (replicas "
                  "of the hottest experts, from a calibration batch); several are measured in "
                  "turn in one launch")
      ->delimiter(',')
      ->check(CLI::IsMember({"contiguous", "round-robin", "load-aware"}))
      ->each([&o](const std::string&) { o.placement_set = true; });
  sub->add_option("--replicas", o.ep.replicas,
                  "Extra expert copies for load-aware placement (default: one per rank)")
      ->each([&o](const std::string&) { o.placement_set = true; });
  sub->add_option("--ep-exchange", o.ep.exchanges,
                  "How --ep moves rows: alltoallv (MPI_Alltoallv; default), window (MPI "
                  "shared-memory windows, every rank on one node), auto (window where it can); "
                  "several are measured in turn in one launch")
      ->delimiter(',')
      ->check(CLI::IsMember({"auto", "window", "alltoallv"}))
      ->each([&o](const std::string&) { o.placement_set = true; });
  sub->add_option("--ep-model", o.ep_model_path,
                  "With --ep: the cost model's calibration (scripts/ep-model.py --save); each "
                  "result's model_predicted_s is its prediction for the run")
      ->each([&o](const std::string&) { o.placement_set = true; });
  return {sub, [options] { return run(*options); }};
}

}  // namespace moe_bench::cli
