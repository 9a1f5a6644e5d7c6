#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <catch2/catch.hpp>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "tests/paths.hpp"
#include "tool.hpp"

using namespace moe_bench::testing;

namespace {

int lines(const std::string& s) { return static_cast<int>(std::count(s.begin(), s.end(), '\n')); }

void expect_usage_error(const std::string& args, const std::string& fragment) {
  INFO("moe-bench " << args);
  Outcome o = run_tool(args);
  CHECK(o.code == 2);
  CHECK(lines(o.err) == 1);
  CHECK(o.err.find(fragment) != std::string::npos);
  CHECK(o.out.empty());
}

}  // namespace

TEST_CASE("bad input gets one clear line and exit 2") {
  expect_usage_error("run --bogus", "--bogus");
  expect_usage_error("run --impl nope", "unknown implementation 'nope'");
  expect_usage_error("run --preset llama-7b", "unknown preset 'llama-7b'");
  expect_usage_error("run --experts 4 --top-k 6", "--top-k 6 exceeds --experts 4");
  expect_usage_error("run --tokens 0", "--tokens must be positive");
  expect_usage_error("run --d-model -5", "--d-model must be positive");
  expect_usage_error("run --experts 10000000 --d-model 10000000 --d-ff 10000000", "overflow");
  expect_usage_error("run --routing zipf:x", "zipf:x");
  expect_usage_error("run --format xml", "unknown format 'xml'");
  expect_usage_error("run --dtype f64", "unknown dtype 'f64'");
  expect_usage_error("run --dtype bf32", "known: f32, bf16, f16");
  expect_usage_error("run --weights int4", "unknown weight format 'int4' (known: same, int8, q4)");
  expect_usage_error("run --weights q4 --d-model 1000 --tokens 1",
                     "--weights q4 needs --d-model a multiple of 32");
  expect_usage_error("run --threads 0", "--threads");
  expect_usage_error("frobnicate", "frobnicate");
  expect_usage_error("run --tokens 1,,2", "--tokens '1,,2' has an empty item");
  expect_usage_error("run --impl=blas,", "--impl 'blas,' has an empty item");
  expect_usage_error("run --routing ,uniform", "empty item");
  expect_usage_error("run --max-isa avx3", "--max-isa 'avx3' is not one of generic, avx2");
  expect_usage_error("run --seed -1", "--seed");
  expect_usage_error("run --seed 1.5", "--seed");
}

TEST_CASE("under --max-isa the tool dispatches as a CPU of that class would") {
  Outcome o = run_tool("list --max-isa generic");
  CHECK(o.code == 0);
  CHECK(o.out.find("Instruction sets: capped at generic") != std::string::npos);
  CHECK(o.out.find("cpu_avx2           cpu    available here: no  (no AVX2 with FMA and F16C under "
                   "the cap") != std::string::npos);
  CHECK(o.out.find("OpenBLAS: Prescott kernel (chosen by --max-isa generic)") != std::string::npos);
  // The variable does the same; the flag wins over it.
  Outcome env = run_tool_env("MOE_BENCH_MAX_ISA=generic ", "list");
  CHECK(env.out.find("capped at generic") != std::string::npos);
  Outcome both = run_tool_env("MOE_BENCH_MAX_ISA=generic ", "list --max-isa avx2");
  CHECK(both.out.find("capped at avx2") != std::string::npos);
  Outcome bad = run_tool_env("MOE_BENCH_MAX_ISA=sse9 ", "list");
  CHECK(bad.code == 2);
  CHECK(bad.err ==
        "moe-bench: error: MOE_BENCH_MAX_ISA 'sse9' is not one of generic, avx2, "
        "avx512, avx512_bf16, amx\n");
  // The report says that a cap is in force.
  Outcome run = run_tool(
      "run --max-isa generic --impl cpu --experts 4 --top-k 2 --d-model 64 "
      "--d-ff 32 --tokens 2 --reps 2 --min-time 0 --format json");
  REQUIRE(run.code == 0);
  const auto j = nlohmann::json::parse(run.out);
  CHECK(
      j.at("context").at("cpu").at("isa_cap").get<std::string>().starts_with("capped at generic"));
  CHECK(j.at("context").at("peaks").at("fma_isa") == "generic");
  CHECK(j.at("results").at(0).at("notes").get<std::string>().starts_with("generic"));
}

TEST_CASE("a preset that does not fit in memory is refused with the size it needs") {
  expect_usage_error("run --preset deepseek-v3", "GiB");
  Outcome o = run_tool("run --preset deepseek-v3");
  CHECK(o.err.find("preset deepseek-v3") != std::string::npos);
  CHECK(o.err.find("--experts") != std::string::npos);
}

TEST_CASE("an unwritable output path is refused before anything runs or is written") {
  namespace fs = std::filesystem;
  const fs::path target = fs::temp_directory_path() / "moe_bench_no_such_dir" / "r.json";
  fs::remove_all(target.parent_path());
  expect_usage_error("run --tokens 1 --json " + target.string(), "does not exist");
  CHECK_FALSE(fs::exists(target.parent_path()));
  // A folder that exists and looks writable but takes no new file: refused at once, not after
  // the run.
  if (fs::is_directory("/proc")) {
    expect_usage_error("run --tokens 1 --json /proc/moe_bench_report.json",
                       "cannot write '/proc/moe_bench_report.json'");
  }
}

TEST_CASE("list shows every implementation with whether it runs here and why not") {
  Outcome o = run_tool("list");
  CHECK(o.code == 0);
  CHECK(o.out.find("naive") != std::string::npos);
  CHECK(o.out.find("blas") != std::string::npos);
  CHECK(o.out.find("available here: yes") != std::string::npos);
  CHECK(o.out.find("CUDA: ") != std::string::npos);
  CHECK(o.out.find("mixtral-8x7b") != std::string::npos);
}

TEST_CASE("run writes a JSON report that parses and carries the schema version") {
  namespace fs = std::filesystem;
  const fs::path path = fs::temp_directory_path() / "moe_bench_cli_run.json";
  fs::remove(path);
  Outcome o = run_tool(
      "run --experts 4,6 --top-k 2 --d-model 32 --d-ff 24 --tokens 1,5 "
      "--routing uniform,zipf:1.1 --reps 2 --min-time 0 --quiet --format json --json " +
      path.string());
  REQUIRE(o.code == 0);
  auto from_stdout = nlohmann::json::parse(o.out);
  auto from_file = nlohmann::json::parse(slurp(path.string()));
  CHECK(from_file["schema_version"] == 1);
  // 2 experts x 2 tokens x 2 skews = 8 cases, each with naive, blas and cpu.
  CHECK(from_file["results"].size() == 24);
  for (const auto& r : from_file["results"]) {
    CHECK(r["status"] == "ok");
    CHECK(r["correctness"]["pass"] == true);
    CHECK(r["stats"]["n"] == 2);
    CHECK(!r["blas"]["core"].get<std::string>().empty());
  }
  CHECK(from_stdout["results"].size() == 24);
  fs::remove(path);
}

TEST_CASE("the weights axis runs each format as its own case, with the quantization's own error") {
  namespace fs = std::filesystem;
  const fs::path path = fs::temp_directory_path() / "moe_bench_cli_weights.json";
  fs::remove(path);
  Outcome o = run_tool(
      "run --impl naive,blas,cpu,numpy --experts 4 --top-k 2 --d-model 64 --d-ff 96 --tokens 3 "
      "--weights same,int8,q4 --reps 2 --min-time 0 --quiet --json " +
      path.string());
  REQUIRE(o.code == 0);
  auto report = nlohmann::json::parse(slurp(path.string()));
  std::map<std::string, double> bytes;  // per call, by format, of cpu
  for (const auto& r : report["results"]) {
    const std::string weights = r["case"]["weights"];
    INFO(r["impl"] << " " << weights);
    if (r["impl"] == "numpy") {
      // No quantized kernels: skipped with the reason, not failed.
      if (weights != "same") {
        CHECK(r["status"] == "skipped");
        CHECK(r["reason"].get<std::string>().find("no " + weights + " weight kernels") !=
              std::string::npos);
      }
      continue;
    }
    CHECK(r["status"] == "ok");
    CHECK(r["correctness"]["pass"] == true);
    CHECK(r.contains("quantization_error") == (weights != "same"));
    if (weights != "same") CHECK(r["quantization_error"]["nmse"].get<double>() > 0);
    if (r["impl"] == "cpu") {
      bytes[weights] =
          r["derived"]["gbytes_per_s"].get<double>() * r["stats"]["median_s"].get<double>();
    }
  }
  // Stored bytes: int8 about a quarter of f32's, q4 about an eighth (plus scales, router, x, y).
  REQUIRE(bytes.size() == 3);
  CHECK(bytes["int8"] < 0.35 * bytes["same"]);
  CHECK(bytes["q4"] < 0.65 * bytes["int8"]);
  fs::remove(path);
}

TEST_CASE("csv and jsonl print one row per result for sweeps") {
  Outcome csv = run_tool(
      "run --experts 4 --d-model 16 --d-ff 8 --tokens 1,2,3 --reps 1 "
      "--min-time 0 --impl blas --format csv");
  REQUIRE(csv.code == 0);
  CHECK(lines(csv.out) == 4);
  Outcome jsonl = run_tool(
      "run --experts 4 --d-model 16 --d-ff 8 --tokens 1,2 --reps 1 "
      "--min-time 0 --impl blas,naive --format jsonl");
  REQUIRE(jsonl.code == 0);
  CHECK(lines(jsonl.out) == 4);
}

TEST_CASE("the blas baseline reports the OpenBLAS kernel it ran on") {
  Outcome o = run_tool(
      "run --experts 4 --d-model 16 --d-ff 8 --tokens 2 --reps 1 --min-time 0 --impl blas "
      "--format json --blas-core auto");
  REQUIRE(o.code == 0);
  auto j = nlohmann::json::parse(o.out);
  CHECK(j["context"]["blas"]["fallback"] == false);
  const auto chosen_by = j["context"]["blas"]["chosen_by"].get<std::string>();
  const bool chosen_by_tool = chosen_by.find("--blas-core auto") != std::string::npos ||
                              chosen_by.find("detection") != std::string::npos;
  CHECK(chosen_by_tool);
  CHECK(j["results"][0]["blas"]["core"] == j["context"]["blas"]["core"]);
}

TEST_CASE("report renders a saved run as Markdown") {
  namespace fs = std::filesystem;
  const fs::path json = fs::temp_directory_path() / "moe_bench_cli_report.json";
  const fs::path md = fs::temp_directory_path() / "moe_bench_cli_report.md";
  fs::remove(md);
  REQUIRE(run_tool("run --experts 4 --d-model 16 --d-ff 8 --tokens 2 --reps 3 --min-time 0 "
                   "--quiet --json " +
                   json.string())
              .code == 0);
  Outcome o = run_tool("report " + json.string() + " --md " + md.string());
  CHECK(o.code == 0);
  const std::string text = slurp(md.string());
  CHECK(text.find("# moe-bench report") != std::string::npos);
  CHECK(text.find("| E4 k2 d16 f8 T=2 | blas | ok |") != std::string::npos);
  CHECK(text.find("## Speed-ups") != std::string::npos);
  expect_usage_error("report " + md.string(), "not valid JSON");
  fs::remove(json);
  fs::remove(md);
}

TEST_CASE("report --baseline recomputes the speed-ups over another implementation") {
  namespace fs = std::filesystem;
  const fs::path json = fs::temp_directory_path() / "moe_bench_cli_rebase.json";
  REQUIRE(run_tool("run --experts 4 --d-model 16 --d-ff 8 --tokens 2 --reps 3 --min-time 0 "
                   "--impl naive,blas,cpu --baseline blas --quiet --json " +
                   json.string())
              .code == 0);
  Outcome o = run_tool("report " + json.string() + " --baseline naive --format json");
  REQUIRE(o.code == 0);
  const auto j = nlohmann::json::parse(o.out);
  std::set<std::string> over;
  for (const auto& c : j["comparisons"]) {
    CHECK(c["b"] == "naive");
    over.insert(c["a"].get<std::string>());
  }
  CHECK(over == std::set<std::string>{"blas", "cpu"});
  expect_usage_error("report " + json.string() + " --baseline nosuch", "no result of nosuch");
  fs::remove(json);
}

TEST_CASE("ctrl-c finishes the current sample and writes what finished, marked interrupted",
          "[serial]") {
  namespace fs = std::filesystem;
  const fs::path json = fs::temp_directory_path() / "moe_bench_cli_interrupt.json";
  fs::remove(json);
  // A sampling budget far longer than the test; SIGINT is sent once the first case reports that
  // it is timing (every implementation then has a sample), however slow the machine is.
  std::vector<std::string> argv_s = {kToolPath, "run",     "--experts",  "4",        "--d-model",
                                     "16",      "--d-ff",  "8",          "--tokens", "1,2,3",
                                     "--reps",  "1000000", "--min-time", "100",      "--max-time",
                                     "100",     "--json",  json.string()};
  std::vector<std::string> env_s = child_environment();
  std::vector<char*> argv, envp;
  for (auto& a : argv_s) argv.push_back(a.data());
  for (auto& e : env_s) envp.push_back(e.data());
  argv.push_back(nullptr);
  envp.push_back(nullptr);
  int err_pipe[2];
  REQUIRE(pipe(err_pipe) == 0);
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    dup2(err_pipe[1], STDERR_FILENO);
    close(err_pipe[0]);
    close(err_pipe[1]);
    if (std::freopen("/dev/null", "w", stdout) == nullptr) _exit(127);
    execve(argv[0], argv.data(), envp.data());
    _exit(127);
  }
  close(err_pipe[1]);
  std::string err;
  std::array<char, 256> buf{};
  ssize_t n = 0;
  while (err.find(": timing") == std::string::npos &&
         (n = read(err_pipe[0], buf.data(), buf.size())) > 0) {
    err.append(buf.data(), static_cast<size_t>(n));
  }
  INFO("stderr before the interrupt: " << err);
  REQUIRE(err.find("case 1 of 3: timing") != std::string::npos);
  kill(pid, SIGINT);
  while (read(err_pipe[0], buf.data(), buf.size()) > 0) {
  }
  close(err_pipe[0]);
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 130);
  auto j = nlohmann::json::parse(slurp(json.string()));
  CHECK(j["interrupted"] == true);
  REQUIRE(j["results"].size() >= 1);
  CHECK(j["results"][0]["stats"]["n"].get<int>() > 0);
  fs::remove(json);
}
