#include <fmt/format.h>

#include <cstdlib>
#include <string_view>

#include "commands.hpp"
#include "moe_bench/error.hpp"
#include "moe_bench/sysinfo.hpp"

namespace {

int fail(moe_bench::ExitCode code, const std::string& message) {
  if (!moe_bench::speaks_for_the_launch()) return static_cast<int>(code);
  fmt::print(stderr, "moe-bench: error: {}\n", message);
  return static_cast<int>(code);
}

// CLI11 drops empty items of a comma list ("1,,2" becomes 1,2); an empty item is a typo the user
// should hear about, so the values of list options are checked as typed.
void reject_empty_list_items(const CLI::App& sub, int argc, char** argv) {
  for (const CLI::Option* opt : sub.get_options()) {
    if (opt->get_delimiter() != ',') continue;
    for (const std::string& name : opt->get_lnames()) {
      const std::string flag = "--" + name;
      for (int i = 1; i < argc; ++i) {
        std::string_view arg = argv[i], value;
        if (arg == flag && i + 1 < argc) {
          value = argv[i + 1];
        } else if (arg.starts_with(flag + "=")) {
          value = arg.substr(flag.size() + 1);
        } else {
          continue;
        }
        if (value.empty() || value.front() == ',' || value.back() == ',' ||
            value.find(",,") != std::string_view::npos) {
          throw moe_bench::UsageError(
              fmt::format("{} '{}' has an empty item in its comma list", flag, value));
        }
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  using moe_bench::ExitCode;
  moe_bench::prepare_process(argc, argv);

  CLI::App app{"moe-bench: Mixture-of-Experts layer benchmarks you can check"};
  app.require_subcommand(1);
  const moe_bench::cli::Command commands[] = {
      moe_bench::cli::add_list_command(app),     moe_bench::cli::add_run_command(app),
      moe_bench::cli::add_report_command(app),   moe_bench::cli::add_compare_command(app),
      moe_bench::cli::add_validate_command(app), moe_bench::cli::add_worker_command(app),
      moe_bench::cli::add_serve_command(app)};
  try {
    const std::string_view first = argc > 1 ? argv[1] : "-";
    if (!first.starts_with('-') && first != "list" && first != "run" && first != "report" &&
        first != "compare" && first != "validate" && first != "worker" && first != "serve") {
      return fail(
          ExitCode::kUsage,
          fmt::format("unknown command '{}' (known: list, run, serve, report, compare, validate)",
                      argv[1]));
    }
    for (const auto& command : commands) {
      if (first == command.sub->get_name()) reject_empty_list_items(*command.sub, argc, argv);
    }
    app.parse(argc, argv);
    for (const auto& command : commands) {
      if (command.sub->parsed()) return command.run();
    }
    return fail(ExitCode::kUsage, "no subcommand given");
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    return fail(ExitCode::kUsage, e.what());
  } catch (const moe_bench::UsageError& e) {
    return fail(ExitCode::kUsage, e.what());
  } catch (const moe_bench::EnvironmentError& e) {
    return fail(ExitCode::kEnvironment, e.what());
  } catch (const std::bad_alloc&) {
    return fail(ExitCode::kEnvironment, "out of memory");
  } catch (const std::exception& e) {
    return fail(ExitCode::kCheckFailed, fmt::format("internal error: {}", e.what()));
  }
}
