// Runs the moe-bench under test as a user would, in an environment of its own.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "tests/paths.hpp"

namespace moe_bench::testing {

/// What a moe-bench process did.
struct Outcome {
  int code = -1;
  std::string out;  ///< stdout
  std::string err;  ///< stderr
};

inline std::string slurp(const std::string& path) {
  std::string text;
  if (FILE* f = std::fopen(path.c_str(), "r")) {
    std::array<char, 4096> buf{};
    size_t n = 0;
    while ((n = std::fread(buf.data(), 1, buf.size(), f)) > 0) text.append(buf.data(), n);
    std::fclose(f);
  }
  return text;
}

// Children get an explicit environment, not the test process's: the test runner may have set
// OPENBLAS_CORETYPE (prepare_process re-executes it) or anything else a user's shell holds.
inline std::vector<std::string> child_environment() {
  std::vector<std::string> env;
  for (const char* name : {"PATH", "HOME", "TMPDIR", "ASAN_OPTIONS", "UBSAN_OPTIONS"}) {
    if (const char* v = std::getenv(name)) env.push_back(std::string(name) + "=" + v);
  }
  return env;
}

inline std::string env_prefix() {
  std::string prefix = "env -i";
  for (const auto& var : child_environment()) prefix += " '" + var + "'";
  return prefix + " ";
}

inline Outcome run_tool_with_prefix(const std::string& prefix, const std::string& args,
                                    const std::string& vars = "") {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path();
  static int calls = 0;
  const std::string tag = std::to_string(getpid()) + "_" + std::to_string(++calls);
  const std::string out = (dir / ("moe_bench_cli_out_" + tag)).string();
  const std::string err = (dir / ("moe_bench_cli_err_" + tag)).string();
  const std::string cmd =
      prefix + env_prefix() + vars + kToolPath + " " + args + " >" + out + " 2>" + err;
  const int status = std::system(cmd.c_str());
  Outcome o{WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(out), slurp(err)};
  fs::remove(out);
  fs::remove(err);
  return o;
}

/// moe-bench with these arguments (a shell word list), in its own environment.
inline Outcome run_tool(const std::string& args) { return run_tool_with_prefix("", args); }

/// The same with variables set in its environment ("NAME=VALUE ...", ending in a space).
inline Outcome run_tool_env(const std::string& vars, const std::string& args) {
  return run_tool_with_prefix("", args, vars);
}

}  // namespace moe_bench::testing
