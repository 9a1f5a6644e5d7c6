#include "moe_bench/report.hpp"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "moe_bench/error.hpp"
#include "moe_bench/harness.hpp"
#include "moe_bench/sysinfo.hpp"
#include "sample_report.hpp"
#include "tests/paths.hpp"

using namespace moe_bench;
using moe_bench::testing::sample_report;

namespace {

std::string read_text(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Compares with tests/golden/NAME; MOE_BENCH_UPDATE_GOLDEN=1 rewrites the file instead.
void check_golden(const std::string& name, const std::string& actual) {
  const std::filesystem::path path = std::filesystem::path(moe_bench::testing::kGoldenDir) / name;
  if (std::getenv("MOE_BENCH_UPDATE_GOLDEN") != nullptr) {
    std::ofstream(path, std::ios::binary) << actual;
  }
  INFO("golden file " << path << " (MOE_BENCH_UPDATE_GOLDEN=1 rewrites it)");
  CHECK(actual == read_text(path));
}

}  // namespace

TEST_CASE("every exporter matches its golden file") {
  const Report report = sample_report();
  check_golden("report.json", render_json(report));
  check_golden("report.jsonl", render_jsonl(report));
  check_golden("report.csv", render_csv(report));
  check_golden("report.md", render_markdown(report));
  check_golden("report.txt", render_table(report));
}

TEST_CASE("the JSON report carries the schema version and the design's names") {
  auto j = nlohmann::json::parse(render_json(sample_report()));
  CHECK(j["schema_version"] == kSchemaVersion);
  CHECK(j["context"]["cpu"]["model"] == "Test CPU");
  CHECK(j["context"]["blas"]["core"] == "SkylakeX");
  CHECK(j["context"]["peaks"]["fp32_gflops"] == 500.0);
  const auto& r = j["results"][1];
  CHECK(r["impl"] == "blas");
  CHECK(r["status"] == "ok");
  CHECK(r["case"]["tokens"] == 4);
  CHECK(r["stats"]["median_s"] == 0.002);
  CHECK(r["stats"]["median_ci_s"].size() == 2);
  CHECK(r["derived"]["bound"] == "memory");
  CHECK(r["correctness"]["pass"] == true);
  CHECK(r["load"]["tokens_per_expert"][3] == 5);
  CHECK(j["results"][2]["correctness"].is_null());
  CHECK(j["comparisons"][0]["a"] == "naive");
  CHECK(j["comparisons"][0]["faster_with_confidence"] == false);
}

TEST_CASE("a saved report reads back to the same report") {
  const Report report = sample_report();
  const std::string json = render_json(report);
  CHECK(render_json(parse_report(json, "mem")) == json);
  CHECK(render_markdown(parse_report(json, "mem")) == render_markdown(report));
}

TEST_CASE("a report from a GPU machine carries the device and its measured ceilings") {
  Report report = sample_report();
  report.system.cuda_available = true;
  report.system.cuda_device = SystemInfo::CudaDevice{
      "NVIDIA H100 80GB HBM3", 132, 9, 0, 1980, 2619, 5120, int64_t{85520809984}, 13000, 13000};
  report.device_peaks = DevicePeaks{"NVIDIA H100 80GB HBM3", 3000.0, 790.0};
  const std::string json = render_json(report);
  const auto j = nlohmann::json::parse(json);
  CHECK(j["context"]["cuda"]["name"] == "NVIDIA H100 80GB HBM3");
  CHECK(j["context"]["cuda"]["compute_capability"] == "9.0");
  CHECK(j["context"]["cuda"]["sms"] == 132);
  CHECK(j["context"]["device_peaks"]["bf16_tflops"] == 790.0);
  const Report back = parse_report(json, "mem");
  REQUIRE(back.system.cuda_device.has_value());
  CHECK(back.system.cuda_device->cc_major == 9);
  CHECK(back.system.cuda_device->memory_bytes == int64_t{85520809984});
  CHECK(render_json(back) == json);
  CHECK_THAT(render_markdown(report), Catch::Contains("3000 GB/s device-to-device copy"));
}

TEST_CASE("malformed or foreign JSON is refused with the reason") {
  CHECK_THROWS_WITH(parse_report("{nope", "a.json"), Catch::Contains("not valid JSON"));
  CHECK_THROWS_WITH(parse_report("[1,2]", "a.json"), Catch::Contains("no schema_version"));
  CHECK_THROWS_WITH(parse_report(R"({"schema_version": 2})", "a.json"),
                    Catch::Contains("schema version 2"));
  auto j = nlohmann::json::parse(render_json(sample_report()));
  j["results"][0].erase("stats");
  CHECK_THROWS_WITH(parse_report(j.dump(), "a.json"), Catch::Contains("malformed"));
  CHECK_THROWS_AS(read_report("/nonexistent/r.json"), UsageError);
}

TEST_CASE("JSONL has one parseable row per result and CSV one line per result") {
  Report report = sample_report();
  std::istringstream jsonl(render_jsonl(report));
  std::string line;
  int rows = 0;
  while (std::getline(jsonl, line)) {
    auto row = nlohmann::json::parse(line);
    CHECK(row.contains("median_ci_low_s"));
    ++rows;
  }
  CHECK(rows == 4);
  std::string csv = render_csv(report);
  CHECK(std::count(csv.begin(), csv.end(), '\n') == 5);
  CHECK(csv.rfind("impl,status,preset,", 0) == 0);
  // A field with a comma or quote is quoted, quotes doubled.
  CHECK(csv.find("\"no CUDA device, \"\"really\"\"\"") != std::string::npos);
}

TEST_CASE("warnings name noisy results, debug builds, fallback kernels and busy machines") {
  Report report = sample_report();
  report.system.build_type = "Debug";
  report.system.blas.fallback = true;
  report.system.load_average = 1.5;
  report.results[0].stats.cv = 0.08;
  auto w = collect_warnings(report);
  auto has = [&](const std::string& text) {
    return std::any_of(w.begin(), w.end(),
                       [&](const std::string& x) { return x.find(text) != std::string::npos; });
  };
  CHECK(has("Debug build"));
  CHECK(has("OpenBLAS runs its SkylakeX kernel"));
  CHECK(has("busy machine"));
  CHECK(has("noisy: naive"));
}

TEST_CASE(
    "a cold case that memory held under four times the last-level cache is called partly warm") {
  Report report = sample_report();  // L3 32768K
  Result& r = report.results[0];
  auto warm = [&] {
    const auto w = collect_warnings(report);
    return std::count_if(w.begin(), w.end(),
                         [](const std::string& x) { return x.starts_with("partly warm: "); });
  };
  r.layers = 1;
  r.round_bytes = 28.8e6;
  CHECK(warm() == 1);
  // Each case once, whatever the number of implementations on it.
  Report twice = report;
  twice.results.push_back(r);
  twice.results.back().impl = "cpu";
  const auto w = collect_warnings(twice);
  CHECK(std::count_if(w.begin(), w.end(),
                      [](const std::string& x) { return x.starts_with("partly warm: "); }) == 1);
  r.round_bytes = 4.0 * 32768 * 1024;  // four times the cache: cold
  CHECK(warm() == 0);
  r.round_bytes = 28.8e6;
  r.layers = kMaxColdLayers;  // not held by memory: the most layers a case rotates
  CHECK(warm() == 0);
  r.layers = 1;
  report.cache = CacheMode::kWarm;  // asked for
  CHECK(warm() == 0);
  report.cache = CacheMode::kCold;
  r.round_bytes = 0;  // not recorded (an older report)
  CHECK(warm() == 0);
  CHECK(largest_cache_bytes("L1d 48K, L1i 32K, L2 1024K, L3 32768K") == int64_t{32} << 20);
  CHECK(largest_cache_bytes("") == 0);
}

TEST_CASE("reports are written atomically and unwritable paths are refused up front") {
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / "moe_bench_report_test";
  fs::remove_all(dir);
  fs::create_directories(dir);
  fs::path out = dir / "r.json";
  check_writable(out);
  write_file_atomically(out, "{}\n");
  CHECK(read_text(out) == "{}\n");
  CHECK(std::distance(fs::directory_iterator(dir), fs::directory_iterator()) == 1);
  CHECK_THROWS_AS(check_writable(dir / "missing" / "r.json"), UsageError);
  CHECK_THROWS_AS(check_writable(dir), UsageError);
  fs::remove_all(dir);
}

TEST_CASE("a result above its ceiling is flagged as a measurement problem, not a percentage") {
  Report report = sample_report();
  report.results[1].derived.roofline_pct = 131.0;
  const std::string table = render_table(report);
  CHECK(table.find("over ceiling") != std::string::npos);
  CHECK(table.find("131") == std::string::npos);
  CHECK(render_markdown(report).find("| over ceiling |") != std::string::npos);
  auto j = nlohmann::json::parse(render_json(report));
  CHECK(j["results"][1]["derived"]["over_ceiling"] == true);
  CHECK(j["results"][0]["derived"]["over_ceiling"] == false);
  bool warned = false;
  for (const auto& w : collect_warnings(report)) {
    warned |= w.starts_with("over ceiling: blas on") && w.find("131%") != std::string::npos;
  }
  CHECK(warned);
  CHECK(roofline_text(report.results[0].derived) == "60.0%");
}
