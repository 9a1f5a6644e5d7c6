// The serving harness: arrival processes against their definitions, the open-loop accounting
// against a server of known speed, and bad input through the CLI.
#include "moe_bench/serving.hpp"

#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <thread>

#include "../cli/tool.hpp"
#include "moe_bench/error.hpp"

using namespace moe_bench;
using namespace moe_bench::testing;

namespace {

// Mean and coefficient of variation of the gaps between arrivals.
std::pair<double, double> gap_stats(const std::vector<Request>& r) {
  std::vector<double> gaps;
  for (size_t i = 1; i < r.size(); ++i) gaps.push_back(r[i].arrival_s - r[i - 1].arrival_s);
  const double mean =
      std::accumulate(gaps.begin(), gaps.end(), 0.0) / static_cast<double>(gaps.size());
  double var = 0;
  for (double g : gaps) var += (g - mean) * (g - mean);
  var /= static_cast<double>(gaps.size() - 1);
  return {mean, std::sqrt(var) / mean};
}

}  // namespace

TEST_CASE("arrival processes have the rate and dispersion of their definitions") {
  const TokenDist one = parse_request_tokens("1");
  // Poisson: exponential gaps, CV 1; 40000 arrivals put the mean within about 1%.
  auto poisson = schedule_requests(parse_arrivals("poisson"), 2000, 20, one, 5);
  auto [mean_p, cv_p] = gap_stats(poisson);
  CHECK(std::abs(static_cast<double>(poisson.size()) / 20 / 2000 - 1) < 0.03);
  CHECK(std::abs(mean_p * 2000 - 1) < 0.03);
  CHECK(std::abs(cv_p - 1) < 0.05);
  // Gamma with CV 3: the same rate, three times the dispersion (burstier).
  auto bursty = schedule_requests(parse_arrivals("gamma:3"), 2000, 20, one, 5);
  auto [mean_g, cv_g] = gap_stats(bursty);
  CHECK(std::abs(mean_g * 2000 - 1) < 0.06);
  CHECK(std::abs(cv_g - 3) < 0.3);
  // Gamma with CV 0.25: nearly regular.
  auto regular = schedule_requests(parse_arrivals("gamma:0.25"), 2000, 20, one, 5);
  CHECK(std::abs(gap_stats(regular).second - 0.25) < 0.02);
  // Token counts: fixed, or uniform over the bounds given.
  auto sized =
      schedule_requests(parse_arrivals("poisson"), 2000, 5, parse_request_tokens("uniform:1:8"), 5);
  int64_t lo = 99, hi = 0;
  double sum = 0;
  for (const auto& r : sized) {
    lo = std::min(lo, r.tokens);
    hi = std::max(hi, r.tokens);
    sum += static_cast<double>(r.tokens);
  }
  CHECK(lo == 1);
  CHECK(hi == 8);
  CHECK(std::abs(sum / static_cast<double>(sized.size()) - 4.5) < 0.1);
  // Seeded: the same schedule again.
  CHECK(schedule_requests(parse_arrivals("poisson"), 100, 2, one, 9).back().arrival_s ==
        schedule_requests(parse_arrivals("poisson"), 100, 2, one, 9).back().arrival_s);
}

TEST_CASE("a trace keeps its own times and a malformed one is refused with its line") {
  namespace fs = std::filesystem;
  const fs::path good = fs::temp_directory_path() / "moe_bench_trace_good.jsonl";
  const fs::path bad = fs::temp_directory_path() / "moe_bench_trace_bad.jsonl";
  std::ofstream(good) << "{\"t\": 0.0, \"tokens\": 2}\n{\"t\": 0.5, \"tokens\": 1}\n"
                         "{\"t\": 3.0, \"tokens\": 4}\n";
  std::ofstream(bad) << "{\"t\": 0.0, \"tokens\": 2}\n{\"t\": -1, \"tokens\": 1}\n";
  const auto reqs = schedule_requests(parse_arrivals("trace:" + good.string()), 1, 2,
                                      parse_request_tokens("1"), 1);
  REQUIRE(reqs.size() == 2);  // cut at the 2 s duration
  CHECK(reqs[1].arrival_s == 0.5);
  CHECK(reqs[0].tokens == 2);
  try {
    parse_arrivals("trace:" + bad.string());
    FAIL("a decreasing time was accepted");
  } catch (const UsageError& e) {
    CHECK(std::string(e.what()).find("line 2") != std::string::npos);
  }
  CHECK_THROWS_AS(parse_arrivals("uniform"), UsageError);
  CHECK_THROWS_AS(parse_request_tokens("uniform:4:2"), UsageError);
  CHECK_THROWS_AS(parse_request_tokens("0"), UsageError);
  fs::remove(good);
  fs::remove(bad);
}

TEST_CASE("open loop: a server too slow for the rate shows a growing queue, not a flat latency",
          "[serial]") {
  // Batches of one token that take 2 ms each, at 1000 requests a second for 0.5 s: the server
  // can do 500 a second, so every request waits longer than the one before.
  const auto requests =
      schedule_requests(parse_arrivals("gamma:0.01"), 1000, 0.5, parse_request_tokens("1"), 3);
  const BatcherOptions one_at_a_time{1, 0.0, 5.0};
  auto slow = [](int64_t) { std::this_thread::sleep_for(std::chrono::milliseconds(2)); };
  const ServingInfo overloaded = serve_requests(requests, one_at_a_time, 0.05, slow, 1);
  CHECK(overloaded.unserved == 0);
  // The last requests waited about half the run (0.25 s) for the server.
  CHECK(overloaded.max_s > 0.15);
  CHECK(overloaded.queue_p99_s > 0.1);
  CHECK(overloaded.p99_s > 40 * overloaded.compute_mean_s);
  CHECK(overloaded.achieved_rps < 600);
  CHECK_FALSE(overloaded.meets_slo);
  // At a fifth of the server's speed the latency is about one batch.
  const auto light =
      schedule_requests(parse_arrivals("gamma:0.01"), 100, 0.5, parse_request_tokens("1"), 3);
  const ServingInfo easy = serve_requests(light, one_at_a_time, 0.05, slow, 1);
  CHECK(easy.p50_s < 0.01);
  CHECK(easy.queue_p50_s < 0.002);
  CHECK(easy.meets_slo);
  // Batching: with room for 8 tokens and time to wait, batches hold several requests.
  const BatcherOptions batching{8, 0.01, 5.0};
  const ServingInfo batched = serve_requests(requests, batching, 0.05, slow, 1);
  CHECK(batched.batch_tokens_mean > 1.5);
  CHECK(batched.batch_tokens_max <= 8);
  CHECK(batched.meets_slo);
}

TEST_CASE("serve refuses bad input in one line") {
  for (const auto& [args, what] : std::vector<std::pair<std::string, std::string>>{
           {"--rate 0", "--rate 0 is not above 0"},
           {"--rate 10,-1", "is not above 0"},
           {"--slo 0", "--slo 0 is not above 0"},
           {"--arrivals trace:/nonexistent.jsonl", "cannot read trace"},
           {"--arrivals gamma:0", "CV above 0"},
           {"--request-tokens uniform:1:100 --max-batch-tokens 8", "does not fit"},
           {"--capacity-factor 1", "dropless"}}) {
    INFO(args);
    Outcome o = run_tool("serve --experts 4 --d-model 16 --d-ff 8 " + args);
    CHECK(o.code == 2);
    CHECK(o.err.find(what) != std::string::npos);
    CHECK(std::count(o.err.begin(), o.err.end(), '\n') == 1);
  }
}

TEST_CASE("serve takes quantized weights: the first batch checked, with the quantization's error") {
  namespace fs = std::filesystem;
  const fs::path json = fs::temp_directory_path() / "moe_bench_serve_quant.json";
  for (const std::string format : {"int8", "q4"}) {
    INFO(format);
    Outcome o = run_tool("serve --impl blas,cpu --weights " + format +
                         " --experts 8 --top-k 2 --d-model 64 --d-ff 64 --rate 100 --duration 0.3 "
                         "--slo 1 --max-batch-tokens 8 -q --json " +
                         json.string());
    REQUIRE(o.code == 0);
    const auto j = nlohmann::json::parse(slurp(json.string()));
    REQUIRE(j["results"].size() == 2);
    for (const auto& r : j["results"]) {
      INFO(r["impl"]);
      CHECK(r["status"] == "ok");
      CHECK(r["case"]["weights"] == format);
      CHECK(r["correctness"]["pass"] == true);
      // Against the unquantized layer: int8's error is far below q4's.
      const double nmse = r["quantization_error"]["nmse"];
      CHECK(nmse > 0);
      CHECK(nmse < (format == "int8" ? 1e-3 : 5e-2));
    }
  }
  // A peer without quantized kernels is skipped with the reason, not failed.
  Outcome peer = run_tool(
      "serve --impl numpy --weights q4 --experts 8 --top-k 2 --d-model 64 --d-ff 64 --rate 50 "
      "--duration 0.2");
  CHECK(peer.code == 0);
  CHECK(peer.out.find("skipped: numpy has no q4 weight kernels") != std::string::npos);
  fs::remove(json);
}

TEST_CASE("serve reports the latency of blas and cpu with the first batch checked") {
  namespace fs = std::filesystem;
  const fs::path json = fs::temp_directory_path() / "moe_bench_serve.json";
  Outcome o = run_tool(
      "serve --impl blas,cpu --experts 8 --top-k 2 --d-model 64 --d-ff 64 --rate 50,200 "
      "--duration 0.5 --slo 1 --max-batch-tokens 16 --request-tokens uniform:1:3 -q --json " +
      json.string());
  REQUIRE(o.code == 0);
  const auto j = nlohmann::json::parse(slurp(json.string()));
  REQUIRE(j["results"].size() == 4);
  for (const auto& r : j["results"]) {
    INFO(r["impl"] << " " << r["serving"].dump());
    CHECK(r["status"] == "ok");
    CHECK(r["correctness"]["pass"] == true);
    const auto& s = r["serving"];
    CHECK(s["requests"].get<int64_t>() > 0);
    CHECK(s["unserved"] == 0);
    CHECK(s["latency_s"]["p50"].get<double>() <= s["latency_s"]["p99"].get<double>());
    CHECK(s["latency_s"]["p99"].get<double>() <= s["latency_s"]["max"].get<double>());
    CHECK(s["batch_tokens"]["max"].get<int64_t>() <= 16);
  }
  REQUIRE(j["serving_summary"].size() == 2);
  for (const auto& s : j["serving_summary"]) CHECK(s["max_rate_at_slo_rps"].get<double>() == 200);
  CHECK(o.out.find("highest rate within the SLO") != std::string::npos);
  fs::remove(json);
}
