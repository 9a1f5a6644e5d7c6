#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "moe_bench/harness.hpp"
#include "moe_bench/plan.hpp"
#include "moe_bench/report.hpp"
#include "moe_bench/side_by_side.hpp"

namespace moe_bench::cli {

/// What a set of cases is and how it is measured: the flags `run`, `compare --against` and the
/// worker share, so the two builds of a side-by-side comparison plan the same cases.
struct CaseOptions {
  Axes axes;
  std::vector<std::string> impls;
  HarnessOptions harness;
  std::string cache = "cold";
  std::string blas_core;
};

/// Registers the shape axes, --impl and the measurement flags on `sub`.
void add_case_options(CLI::App* sub, CaseOptions& o);

/// Seeds as typed: whole non-negative numbers (CLI11 alone wraps "-1" to 2^64 - 1).
CLI::Validator seed_validator();

/// --max-isa, acted on in main before parsing (prepare_process); CLI11 checks its value again.
void add_max_isa_option(CLI::App* sub);

/// Checks the measurement flags and the implementations (each must exist; those asked for by name
/// must run here), fills harness.cache and harness.make, and plans the cases (each implementation
/// process holding `processes` copies of the data). Throws UsageError or EnvironmentError.
std::vector<Case> plan_checked(CaseOptions& o, int processes = 1);

/// Ctrl-C asks the measurement in progress to stop (request_interrupt): what finished is written,
/// marked interrupted.
void interrupt_on_sigint();

/// The flags that reproduce `o`'s cases and measurement in another moe-bench process.
std::vector<std::string> case_arguments(const CaseOptions& o);

/// Progress for people: a live "case i/N" line with an ETA on a terminal, one line per step
/// elsewhere (a log, a script waiting for a case to start timing); nothing when not enabled.
ProgressFn progress_lines(bool enabled);

/// Ends a command that measured: warnings (on stderr unless the table shows them), the report on
/// stdout (`table` replaces the table renderer where given), --json and --md written atomically;
/// returns the exit code: 130 interrupted, 1 when a result failed, else 0.
int emit_report(const Report& report, Format format, const std::string& json_path,
                const std::string& md_path, const std::string& table = {});

/// Parses --inject-slowdown IMPL:FRACTION (empty: none); throws UsageError.
InjectedSlowdown parse_slowdown(const std::string& spec);

}  // namespace moe_bench::cli
