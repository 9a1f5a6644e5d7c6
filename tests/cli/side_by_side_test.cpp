// compare --against: two builds measured side by side in one run, and the worker protocol.
#include "moe_bench/side_by_side.hpp"

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "tests/paths.hpp"
#include "tool.hpp"

using namespace moe_bench::testing;

namespace {

// One thread each: a case this small must not depend on two OpenMP threads meeting at a barrier
// while another test loads the machine.
const std::string kTinyCase =
    "--impl cpu,naive --experts 4 --d-model 32 --d-ff 16 --tokens 2 --threads 1 --reps 20 "
    "--min-time 0 --quiet";

}  // namespace

TEST_CASE("a worker answers the protocol: hello, a prepared case, a sample") {
  const Outcome o =
      run_tool_with_prefix("printf 'case 0 3 0\\nsample naive\\nquit\\n' | ",
                           "worker --impl naive,cpu --experts 4 --d-model 16 --d-ff 8 --tokens 2");
  REQUIRE(o.code == 0);
  CHECK(
      o.out.starts_with("moe-bench-worker " + std::to_string(moe_bench::kWorkerProtocol) + " 1\n"));
  // The fingerprint of the generated problem comes before the implementations.
  const auto inputs = o.out.find("\ninputs ");
  REQUIRE(inputs != std::string::npos);
  CHECK(o.out.find('\n', inputs + 1) == inputs + 8 + 16);
  CHECK(inputs < o.out.find("impl naive ok "));
  CHECK(o.out.find("impl naive ok ") != std::string::npos);
  CHECK(o.out.find("impl cpu ok ") != std::string::npos);
  CHECK(o.out.find("\nready 3 E4 k2 d16 f8 T=2\n") != std::string::npos);
  const std::string last = o.out.substr(o.out.rfind('\n', o.out.size() - 2) + 1);
  CHECK(std::stod(last) > 0);
}

TEST_CASE("compare --against measures this build against itself and finds no regression",
          "[serial]") {
  const auto json = std::filesystem::temp_directory_path() / "moe_bench_against.json";
  const Outcome o = run_tool("compare --against " + std::string(kToolPath) + " " + kTinyCase +
                             " --threshold 0.5 --json " + json.string());
  INFO(o.out << o.err);
  CHECK(o.code == 0);
  CHECK(o.out.find("result: no regression") != std::string::npos);
  const auto j = nlohmann::json::parse(slurp(json.string()));
  REQUIRE(j["changes"].size() == 2);
  for (const auto& change : j["changes"]) CHECK(change["n_new"].get<int>() >= 20);
  std::filesystem::remove(json);
}

TEST_CASE("compare --against catches a slowdown injected into the new build", "[serial]") {
  // Each sample of the new build's naive spins for twice as long again: a ratio near 3 on any
  // machine, well beyond the threshold of 1.5.
  const auto json = std::filesystem::temp_directory_path() / "moe_bench_against_slow.json";
  const Outcome o =
      run_tool("compare --against " + std::string(kToolPath) + " " + kTinyCase +
               " --threshold 0.5 --inject-slowdown naive:2.0 --confirm 1 --json " + json.string());
  INFO(o.out << o.err);
  CHECK(o.code == 1);
  CHECK(o.out.find("result: REGRESSION") != std::string::npos);
  // --confirm measured the slower case once more, and only it, and found it slower again.
  CHECK(o.err.find("1 case slower: measuring again side by side (confirmation 1 of 1)") !=
        std::string::npos);
  CHECK(o.out.find("(confirmed)") != std::string::npos);
  const auto j = nlohmann::json::parse(slurp(json.string()));
  bool naive_seen = false;
  for (const auto& change : j["changes"]) {
    if (change["impl"] != "naive") continue;
    naive_seen = true;
    CHECK(change["verdict"] == "regression");
    CHECK(change["ratio"].get<double>() > 1.5);
  }
  CHECK(naive_seen);
  std::filesystem::remove(json);
}

TEST_CASE("compare --against refuses a binary that is not a moe-bench worker") {
  Outcome o = run_tool("compare --against /bin/true " + kTinyCase);
  CHECK(o.code == 3);
  CHECK(o.err.find("does not speak worker protocol") != std::string::npos);
  o = run_tool("compare --against /no/such/moe-bench " + kTinyCase);
  CHECK(o.code == 2);
  CHECK(o.err.find("is not an executable file") != std::string::npos);
  o = run_tool("compare --against " + std::string(kToolPath) + " a.json b.json");
  CHECK(o.code == 2);
}

namespace {

// A script that runs this build as a worker with its answers edited by `sed_program`.
std::filesystem::path edited_worker(const std::string& name, const std::string& sed_program) {
  const auto path = std::filesystem::temp_directory_path() / name;
  std::ofstream(path) << "#!/bin/sh\n\"" << kToolPath << "\" \"$@\" | sed -u " << sed_program
                      << "\n";
  std::filesystem::permissions(path, std::filesystem::perms::owner_all);
  return path;
}

}  // namespace

TEST_CASE("compare --against refuses builds that generated different data for a case") {
  // As a build with another data generator would: same shapes, other values.
  const auto other =
      edited_worker("moe_bench_other_data.sh", "'s/^inputs .*/inputs 0123456789abcdef/'");
  const auto json = std::filesystem::temp_directory_path() / "moe_bench_other_data.json";
  std::filesystem::remove(json);
  const Outcome o = run_tool("compare --against " + other.string() + " " + kTinyCase + " --json " +
                             json.string());
  CHECK(o.code == 3);
  CHECK(o.err.find("generated different inputs for E4 k2 d32 f16 T=2 (fingerprints "
                   "0123456789abcdef and ") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(json));
  // A protocol 3 worker (before fingerprints) is still compared, without that check.
  const auto older =
      edited_worker("moe_bench_protocol3.sh",
                    "-e '/^inputs /d' -e 's/^moe-bench-worker 4 /moe-bench-worker 3 /'");
  const Outcome p = run_tool("compare --against " + older.string() + " " + kTinyCase);
  CHECK(p.err.find("does not speak") == std::string::npos);
  CHECK(p.out.find("E4 k2 d32 f16 T=2") != std::string::npos);
  std::filesystem::remove(other);
  std::filesystem::remove(older);
}
