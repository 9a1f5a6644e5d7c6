#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace moe_bench::cli {

/// A subcommand as registered on the app: its parser and what runs it (returning the exit code).
struct Command {
  CLI::App* sub = nullptr;
  std::function<int()> run;
};

Command add_list_command(CLI::App& app);
Command add_run_command(CLI::App& app);
Command add_serve_command(CLI::App& app);
Command add_report_command(CLI::App& app);
Command add_compare_command(CLI::App& app);
Command add_validate_command(CLI::App& app);
Command add_worker_command(CLI::App& app);

}  // namespace moe_bench::cli
