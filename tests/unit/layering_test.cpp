// Dependencies point one way: core <- implementations <- registry <- app (STYLE.md, habit 11).
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tests/paths.hpp"

namespace {

namespace fs = std::filesystem;

// The quoted includes of every source file under `dir` (relative to the source tree), as
// "file: include".
std::vector<std::string> quoted_includes(const std::string& dir) {
  std::vector<std::string> out;
  const fs::path root = fs::path(moe_bench::testing::kSourceDir) / dir;
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    const std::string ext = entry.path().extension().string();
    if (ext != ".cpp" && ext != ".hpp" && ext != ".cu" && ext != ".cuh") continue;
    std::ifstream in(entry.path());
    std::string line;
    while (std::getline(in, line)) {
      const auto start = line.find("#include \"");
      if (start == std::string::npos) continue;
      const auto first = line.find('"', start) + 1;
      out.push_back(entry.path().filename().string() + ": " +
                    line.substr(first, line.find('"', first) - first));
    }
  }
  return out;
}

bool names_outside(const std::string& include, const std::vector<std::string>& allowed) {
  const std::string header = include.substr(include.find(": ") + 2);
  if (header.find('/') == std::string::npos) return false;  // its own folder
  for (const auto& prefix : allowed) {
    if (header.rfind(prefix, 0) == 0) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("the core includes no implementation, registry or app header") {
  for (const char* dir : {"lib/src", "lib/include"}) {
    for (const auto& include : quoted_includes(dir)) {
      INFO(dir << "/" << include);
      CHECK_FALSE(names_outside(include, {"moe_bench/"}));
    }
  }
}

TEST_CASE("each implementation includes only the core and its own folder") {
  for (const char* dir : {"baselines/naive", "baselines/blas", "baselines/python",
                          "lib/kernels/cpu", "lib/kernels/cuda"}) {
    for (const auto& include : quoted_includes(dir)) {
      INFO(dir << "/" << include);
      CHECK_FALSE(names_outside(include, {"moe_bench/"}));
    }
  }
}
