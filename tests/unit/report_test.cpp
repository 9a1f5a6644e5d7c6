#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "moe_bench/error.hpp"
#include "moe_bench/report.hpp"

using namespace moe_bench;

namespace {

Report sample_report() {
  Report report;
  report.system.cpu_model = "Test CPU";
  report.system.build_type = "Release";
  report.system.blas.core = "SkylakeX";
  Result ok;
  ok.kase.shape.tokens = 4;
  ok.kase.threads = 2;
  ok.impl = "blas";
  ok.status = Status::kOk;
  ok.correctness = Correctness{true, 1e-7, 2e-7, 1e-14, 1e-4, 4, 0, 0, 0};
  ok.samples_s = {0.002, 0.001, 0.003};
  ok.stats = summarize(ok.samples_s);
  ok.derived.tokens_per_s = 2000;
  ok.load.tokens_per_expert = {1, 2, 0, 5, 0, 0, 0, 0};
  Result skipped;
  skipped.impl = "naive";
  skipped.reason = "too slow, \"really\"";
  report.results = {ok, skipped};
  return report;
}

}  // namespace

TEST_CASE("the JSON report carries the schema version and the design's names") {
  auto j = nlohmann::json::parse(render_json(sample_report()));
  CHECK(j["schema_version"] == kSchemaVersion);
  CHECK(j["context"]["cpu"]["model"] == "Test CPU");
  CHECK(j["context"]["blas"]["core"] == "SkylakeX");
  const auto& r = j["results"][0];
  CHECK(r["impl"] == "blas");
  CHECK(r["status"] == "ok");
  CHECK(r["case"]["tokens"] == 4);
  CHECK(r["stats"]["median_s"] == 0.002);
  CHECK(r["correctness"]["pass"] == true);
  CHECK(r["samples_s"].size() == 3);
  CHECK(r["load"]["tokens_per_expert"][3] == 5);
  CHECK(j["results"][1]["status"] == "skipped");
  CHECK(j["results"][1]["correctness"].is_null());
}

TEST_CASE("JSONL has one parseable row per result and CSV one line per result") {
  Report report = sample_report();
  std::istringstream jsonl(render_jsonl(report));
  std::string line;
  int rows = 0;
  while (std::getline(jsonl, line)) {
    auto row = nlohmann::json::parse(line);
    CHECK(row.contains("median_s"));
    ++rows;
  }
  CHECK(rows == 2);
  std::string csv = render_csv(report);
  CHECK(std::count(csv.begin(), csv.end(), '\n') == 3);
  CHECK(csv.rfind("impl,status,preset,", 0) == 0);
  // A field with a comma or quote is quoted, quotes doubled.
  CHECK(csv.find("\"too slow, \"\"really\"\"\"") != std::string::npos);
}

TEST_CASE("reports are written atomically and unwritable paths are refused up front") {
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / "moe_bench_report_test";
  fs::remove_all(dir);
  fs::create_directories(dir);
  fs::path out = dir / "r.json";
  check_writable(out);
  write_file_atomically(out, "{}\n");
  std::ifstream in(out);
  std::string text((std::istreambuf_iterator<char>(in)), {});
  CHECK(text == "{}\n");
  CHECK(std::distance(fs::directory_iterator(dir), fs::directory_iterator()) == 1);
  CHECK_THROWS_AS(check_writable(dir / "missing" / "r.json"), UsageError);
  CHECK_THROWS_AS(check_writable(dir), UsageError);
  fs::remove_all(dir);
}
