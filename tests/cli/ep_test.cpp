// Expert parallelism as users launch it: mpirun --oversubscribe -np N moe-bench run --ep N.
// Without MPI in the build each test says so and checks only that --ep explains itself.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "moe_bench/ep_model.hpp"
#include "moe_bench/error.hpp"
#include "moe_bench/placement.hpp"
#include "tests/paths.hpp"
#include "tool.hpp"

using namespace moe_bench;
using namespace moe_bench::testing;

namespace {

// mpirun in the same explicit environment as run_tool, plus what Open MPI needs to run as root
// (CI does) and, under the sanitizers, no leak check at exit: Open MPI keeps allocations until
// the process ends. `timeout`: a rank that hangs fails the test instead of the suite.
Outcome run_mpi(int ranks, const std::string& args, const std::string& env = "") {
  std::string asan = "detect_leaks=0";
  if (const char* a = std::getenv("ASAN_OPTIONS")) asan = std::string(a) + ":" + asan;
  std::string prefix = "env -i";
  for (const auto& var : child_environment()) {
    if (!var.starts_with("ASAN_OPTIONS=")) prefix += " '" + var + "'";
  }
  prefix += " ASAN_OPTIONS='" + asan +
            "' OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 " + env +
            " timeout 300 mpirun -q --oversubscribe -np " + std::to_string(ranks) + " ";
  namespace fs = std::filesystem;
  static int calls = 0;
  const std::string tag = std::to_string(getpid()) + "_ep" + std::to_string(++calls);
  const std::string out = (fs::temp_directory_path() / ("moe_bench_ep_out_" + tag)).string();
  const std::string err = (fs::temp_directory_path() / ("moe_bench_ep_err_" + tag)).string();
  const std::string cmd = prefix + kToolPath + " " + args + " >" + out + " 2>" + err;
  const int status = std::system(cmd.c_str());
  Outcome o{WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(out), slurp(err)};
  fs::remove(out);
  fs::remove(err);
  return o;
}

bool have_mpi() {
#ifdef MOE_BENCH_HAVE_MPI
  return std::system("command -v mpirun >/dev/null 2>&1") == 0;
#else
  return false;
#endif
}

const char* kSmall = "--experts 8 --top-k 2 --d-model 64 --d-ff 48 --reps 2 --min-time 0 -q";

}  // namespace

TEST_CASE("placements put every expert somewhere and load-aware balances a skewed load") {
  const std::vector<int64_t> zipf{430, 187, 115, 82, 62, 50, 42, 35};  // ~1/rank^1.2
  for (int ranks : {1, 2, 3, 4}) {
    const Placement c = place_experts("contiguous", 8, ranks, zipf, 0);
    const Placement rr = place_experts("round-robin", 8, ranks, zipf, 0);
    const Placement la = place_experts("load-aware", 8, ranks, zipf, ranks);
    for (const Placement* p : {&c, &rr, &la}) {
      INFO(p->policy << " on " << ranks << " ranks");
      REQUIRE(p->owners.size() == 8);
      for (const auto& o : p->owners) {
        REQUIRE_FALSE(o.empty());
        for (int r : o) CHECK((r >= 0 && r < ranks));
      }
    }
    CHECK(rr.owners[5] == std::vector<int>{5 % ranks});
    if (ranks == 1) continue;
    // Replicas of the hottest experts on two different ranks, tokens split between them.
    CHECK(la.replicas == ranks);
    CHECK(la.owners[0].size() == 2);
    CHECK(la.owners[0][0] != la.owners[0][1]);
    CHECK(la.rank_for(0, 0) != la.rank_for(0, 1));
    const double before = max_over_mean(c.rank_load(zipf));
    const double after = max_over_mean(la.rank_load(zipf));
    INFO("max/mean contiguous " << before << ", load-aware " << after);
    CHECK(after - 1 <= 0.5 * (before - 1));
  }
  CHECK_THROWS_AS(place_experts("random", 8, 2, zipf, 0), UsageError);
}

TEST_CASE("one rank (run --ep 1) gives the single-process output bit for bit") {
  if (!have_mpi()) {
    WARN("skipped: this build has no MPI");
    return;
  }
  // One launch each for every case (a launch under the sanitizers takes seconds).
  const std::string args = std::string(kSmall) +
                           " --tokens 16 --threads 2 --format json --dtype f32,bf16,f16 --routing "
                           "zipf:1.2,hot:0.5 --capacity-factor 0,1";
  Outcome single = run_tool("run --impl cpu " + args);
  // auto: one node, so the shared-memory window exchange (nothing crosses ranks at N = 1, but
  // the rows are read back through it).
  Outcome ep = run_mpi(1, "run --ep 1 --ep-exchange auto " + args);
  REQUIRE(single.code == 0);
  REQUIRE(ep.code == 0);
  const auto a = nlohmann::json::parse(single.out)["results"];
  const auto b = nlohmann::json::parse(ep.out)["results"];
  REQUIRE(a.size() == 12);
  REQUIRE(b.size() == a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    INFO(a[i]["case"].dump());
    REQUIRE(a[i]["case"] == b[i]["case"]);
    CHECK(b[i]["ep"]["exchange"] == "window");
    const auto& ca = a[i]["correctness"];
    const auto& cb = b[i]["correctness"];
    // Equal outputs give equal error statistics to the last bit (doubles compared exactly).
    CHECK(ca["max_abs_err"].get<double>() == cb["max_abs_err"].get<double>());
    CHECK(ca["nmse"].get<double>() == cb["nmse"].get<double>());
    CHECK(ca["max_rel_err"].get<double>() == cb["max_rel_err"].get<double>());
  }
}

TEST_CASE("expert-parallel runs on 2, 3 and 4 ranks pass the oracle for every routing option") {
  if (!have_mpi()) {
    WARN("skipped: this build has no MPI");
    return;
  }
  struct Run {
    int ranks;
    std::string args;
  };
  // Shapes of real presets shrunk to d=64: shared experts (deepseek-v2-lite), sigmoid scoring
  // with a selection bias and grouped top-k (deepseek-v3), clamped SwiGLU and top-k softmax
  // (gpt-oss), GELU with capacity (switch); skews and capacity on a plain shape.
  const std::string presets =
      "--preset deepseek-v2-lite,deepseek-v3,gpt-oss-20b,switch-base-8 --d-model 64 --d-ff 32 "
      "--tokens 5 --reps 2 --min-time 0 -q --format json";
  const std::vector<Run> runs = {
      {2, std::string(kSmall) +
              " --tokens 8 --routing uniform,zipf:1.2,hot:0.6 --capacity-factor 0,1 --dtype "
              "f32,bf16 --format json"},
      {3, presets + " --placement load-aware"},
      // auto: every rank on this node, so the shared-memory window exchange.
      {4, presets +
              " --placement round-robin --dtype bf16 --capacity-factor 0,1.25 --ep-exchange auto"},
  };
  for (const Run& run : runs) {
    INFO(run.ranks << " ranks: " << run.args);
    Outcome o = run_mpi(run.ranks, "run --ep " + std::to_string(run.ranks) + " " + run.args);
    INFO(o.err);
    REQUIRE(o.code == 0);
    const auto j = nlohmann::json::parse(o.out);
    REQUIRE_FALSE(j["results"].empty());
    for (const auto& r : j["results"]) {
      INFO(r["case"].dump());
      CHECK(r["status"] == "ok");
      CHECK(r["correctness"]["pass"] == true);
      CHECK(r["correctness"]["selection_mismatches"] == 0);
      const auto& e = r["ep"];
      CHECK(e["ranks"] == run.ranks);
      CHECK(e["exchange"] == (run.ranks == 4 ? "window" : "alltoallv"));
      CHECK(e["rows_per_rank"].size() == static_cast<size_t>(run.ranks));
      // The layer has ranks x T tokens; the oracle checks all of them or its sample.
      CHECK(r["case"]["tokens"].get<int64_t>() == run.ranks * e["tokens_per_rank"].get<int64_t>());
      CHECK(e["stages_s"]["compute"].get<double>() > 0);
      CHECK(e["single_process_s"].get<double>() > 0);
    }
  }
}

TEST_CASE("one launch measures placements and exchanges in turn, each checked and compared") {
  if (!have_mpi()) {
    WARN("skipped: this build has no MPI");
    return;
  }
  // Three ranks (window regions of unequal fill), replicas, capacity, both wire dtypes.
  const std::string args = std::string(kSmall) +
                           " --tokens 6 --routing zipf:1.2 --capacity-factor 0,1 --dtype f32,bf16 "
                           "--placement contiguous,load-aware --ep-exchange alltoallv,window "
                           "--format json";
  Outcome o = run_mpi(3, "run --ep 3 " + args);
  INFO(o.err);
  REQUIRE(o.code == 0);
  const auto j = nlohmann::json::parse(o.out);
  const auto& results = j["results"];
  REQUIRE(results.size() == 16);  // 4 cases x 2 placements x 2 exchanges
  const std::vector<std::pair<std::string, std::string>> variants = {{"contiguous", "alltoallv"},
                                                                     {"contiguous", "window"},
                                                                     {"load-aware", "alltoallv"},
                                                                     {"load-aware", "window"}};
  for (size_t c = 0; c < 4; ++c) {
    for (size_t v = 0; v < variants.size(); ++v) {
      const auto& r = results[c * 4 + v];
      INFO(r["case"].dump() << " " << variants[v].first << " " << variants[v].second);
      CHECK(r["case"] == results[c * 4]["case"]);
      CHECK(r["status"] == "ok");
      CHECK(r["correctness"]["pass"] == true);
      CHECK(r["ep"]["placement"] == variants[v].first);
      CHECK(r["ep"]["exchange"] == variants[v].second);
      CHECK(r["samples_s"].size() == results[c * 4]["samples_s"].size());  // measured in turn
    }
    // The exchange moves the same rows and the sums keep their order: one output bit for bit.
    for (size_t v = 0; v < variants.size(); v += 2) {
      const auto& a = results[c * 4 + v];
      const auto& b = results[c * 4 + v + 1];
      CHECK(a["ep"]["rows_per_rank"] == b["ep"]["rows_per_rank"]);
      CHECK(a["ep"]["bytes_sent_per_rank"] == b["ep"]["bytes_sent_per_rank"]);
      for (const char* stat : {"max_abs_err", "nmse", "max_rel_err"}) {
        CHECK(a["correctness"][stat].get<double>() == b["correctness"][stat].get<double>());
      }
    }
  }
  // Every variant against the first, from the same rounds.
  const auto& comparisons = j["comparisons"];
  REQUIRE(comparisons.size() == 12);
  for (const auto& cmp : comparisons) {
    CHECK(cmp["b"] == "cpu (contiguous, alltoallv)");
    CHECK(cmp["a"] != cmp["b"]);
  }
}

TEST_CASE("run --ep says what is wrong in one line") {
  if (!have_mpi()) {
    Outcome o = run_tool(std::string("run --ep 2 ") + kSmall + " --tokens 2");
    CHECK(o.code == 3);
    CHECK(o.err.find("no MPI") != std::string::npos);
    return;
  }
  // Started without mpirun (one process) but asked for two.
  Outcome one = run_mpi(1, std::string("run --ep 2 ") + kSmall + " --tokens 2");
  CHECK(one.code == 2);
  CHECK(one.err.find("mpirun -np 2") != std::string::npos);
  // Under mpirun every rank meets the bad input; one line, from rank 0.
  Outcome bad = run_mpi(2, std::string("run --ep 2 --impl blas ") + kSmall + " --tokens 2");
  CHECK(bad.code == 2);
  CHECK(bad.err.find("does not split routing") != std::string::npos);
  CHECK(std::count(bad.err.begin(), bad.err.end(), '\n') == 1);
  // Input that is wrong before MPI starts: every rank finds it, rank 0 alone says so.
  Outcome early = run_mpi(2, std::string("run --ep 2 --replicas -4 ") + kSmall + " --tokens 2");
  CHECK(early.code == 2);
  CHECK(early.err.find("--replicas -4") != std::string::npos);
  CHECK(std::count(early.err.begin(), early.err.end(), '\n') == 1);
  // A rank that fails mid-run ends the whole run with that rank named, without a hang (its
  // shared-memory windows open: freeing them is collective).
  Outcome dies =
      run_mpi(2, std::string("run --ep 2 --ep-exchange window ") + kSmall + " --tokens 2",
              "MOE_BENCH_TEST_FAIL_RANK=1");
  CHECK(dies.code != 0);
  CHECK(dies.err.find("rank 1 of 2") != std::string::npos);
  // A rank killed without a word: the others say why they stopped, and the exit is not 0.
  Outcome killed =
      run_mpi(2, std::string("run --ep 2 ") + kSmall + " --tokens 2", "MOE_BENCH_TEST_KILL_RANK=1");
  CHECK(killed.code != 0);
  CHECK(killed.err.find("rank 0 of 2: stopped by mpirun") != std::string::npos);
  Outcome placement = run_tool(std::string("run --placement load-aware ") + kSmall);
  CHECK(placement.code == 2);
  CHECK(placement.err.find("need --ep") != std::string::npos);
  Outcome exchange = run_tool(std::string("run --ep-exchange window ") + kSmall);
  CHECK(exchange.code == 2);
  CHECK(exchange.err.find("need --ep") != std::string::npos);
  Outcome unknown = run_tool(std::string("run --ep 2 --ep-exchange pigeon ") + kSmall);
  CHECK(unknown.code == 2);
  CHECK(unknown.err.find("--ep-exchange") != std::string::npos);
}

TEST_CASE("the cost model puts ranks on cores round-robin, a core's ranks in turn") {
  const std::vector<double> balanced{1, 1, 1, 1};
  CHECK(bound_finish_s(balanced, 4, 1) == Approx(1));  // a core each
  CHECK(bound_finish_s(balanced, 2, 1) == Approx(2));  // two ranks per core
  CHECK(bound_finish_s(balanced, 8, 2) == Approx(1));  // 2 threads each on 8 cores
  // Three on two cores: ranks 0 and 2 share core 0.
  const std::vector<double> three{1, 1, 1};
  CHECK(bound_finish_s(three, 2, 1) == Approx(2));
  // Two on one core: one after the other.
  const std::vector<double> uneven{3, 1};
  CHECK(bound_finish_s(uneven, 1, 1) == Approx(4));
  // Core 0 holds ranks 0 and 2 (4 s), core 1 ranks 1 and 3 (1 s).
  const std::vector<double> skewed{3, 0.5, 1, 0.5};
  CHECK(bound_finish_s(skewed, 2, 1) == Approx(4));

  EpCalibration cal;
  cal.overhead_s = 1e-4;
  cal.row_s = 1e-5;
  cal.expert_s = 1e-3;
  cal.message_s = 2e-5;
  cal.byte_s = 1e-10;
  EpInfo ep;
  ep.ranks = 2;
  ep.threads_per_rank = 1;
  ep.rows_per_rank = {100, 20};
  ep.experts_per_rank = {4, 4};
  ep.dispatch_bytes_per_rank = 1e5;
  ep.combine_bytes_per_rank = 2e5;
  // Two cores: the busier rank's work, plus 2 messages and 3e5 bytes.
  const double busier = 1e-4 + 100 * 1e-5 + 4 * 1e-3;
  CHECK(predict_step_s(cal, ep, 2) == Approx(busier + 2 * 2e-5 + 3e5 * 1e-10));
  // One core: the two works in turn and the exchanges twice as slow.
  const double lighter = 1e-4 + 20 * 1e-5 + 4 * 1e-3;
  CHECK(predict_step_s(cal, ep, 1) == Approx(busier + lighter + 2 * (2 * 2e-5 + 3e5 * 1e-10)));
}

TEST_CASE("run --ep --ep-model puts the model's prediction in the result") {
  namespace fs = std::filesystem;
  const std::string dir =
      (fs::temp_directory_path() / ("moe_bench_ep_model_" + std::to_string(getpid()))).string();
  fs::create_directories(dir);
  const std::string bad = dir + "/bad.json", good = dir + "/model.json";
  std::ofstream(bad) << "{\"schema\": \"something else\", \"cases\": []}";
  CHECK_THROWS_AS(load_ep_model(bad), UsageError);
  CHECK_THROWS_AS(load_ep_model(dir + "/absent.json"), UsageError);
  const nlohmann::json model = {{"schema", "moe-bench-ep-model/2"},
                                {"cases",
                                 {{{"overhead_s", 1e-4},
                                   {"row_s", 1e-5},
                                   {"expert_s", 1e-3},
                                   {"message_s", 2e-5},
                                   {"byte_s", 0.0},
                                   {"case",
                                    {{"preset", ""},
                                     {"experts", 8},
                                     {"top_k", 2},
                                     {"d_model", 64},
                                     {"d_ff", 48},
                                     {"shared_experts", 0},
                                     {"d_ff_shared", 0},
                                     {"activation", "swiglu"},
                                     {"dtype", "f32"},
                                     {"tokens_per_rank", 4},
                                     {"threads_per_rank", 1}}}}}}};
  std::ofstream(good) << model.dump();
  REQUIRE(load_ep_model(good).size() == 1);
  if (!have_mpi()) {
    WARN("skipped the runs: this build has no MPI");
    fs::remove_all(dir);
    return;
  }
  const std::string args = std::string("run --ep 1 ") + kSmall + " --threads 1";
  // One calibration serves every routing of the shape. The table on standard output, the JSON
  // in a file.
  const std::string json = dir + "/run.json";
  Outcome o = run_mpi(
      1, args + " --tokens 4 --routing uniform,hot:0.9 --ep-model " + good + " --json " + json);
  INFO(o.err);
  REQUIRE(o.code == 0);
  const auto results = nlohmann::json::parse(slurp(json))["results"];
  REQUIRE(results.size() == 2);
  for (const auto& r : results) {
    const auto& e = r["ep"];
    // One rank: its own work alone, no exchange.
    const double expected = 1e-4 + 1e-5 * e["rows_per_rank"][0].get<double>() +
                            1e-3 * e["experts_per_rank"][0].get<double>();
    CHECK(e["model_predicted_s"].get<double>() == Approx(expected));
  }
  // The table shows the stages and the prediction beside the step.
  CHECK(o.out.find("expert-parallel") != std::string::npos);
  CHECK(o.out.find(" ms (") != std::string::npos);  // the model's step and its error
  // A case the file does not calibrate: one line before any work.
  Outcome other = run_mpi(1, args + " --tokens 5 --ep-model " + good);
  CHECK(other.code == 2);
  CHECK(other.err.find("no calibration") != std::string::npos);
  CHECK(std::count(other.err.begin(), other.err.end(), '\n') == 1);
  fs::remove_all(dir);
}
