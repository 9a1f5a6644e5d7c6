#include <fmt/format.h>

#include "moe_bench/report.hpp"

namespace moe_bench {

using nlohmann::json;

nlohmann::json case_to_json(const Case& c) {
  const Shape& s = c.shape;
  return json{{"preset", s.preset.empty() ? json(nullptr) : json(s.preset)},
              {"experts", s.experts},
              {"top_k", s.top_k},
              {"d_model", s.d_model},
              {"d_ff", s.d_ff},
              {"tokens", s.tokens},
              {"shared_experts", s.shared_experts},
              {"d_ff_shared", s.d_ff_shared},
              {"dtype", to_string(c.dtype)},
              {"activation", to_string(s.activation)},
              {"routing", to_string(s.skew)},
              {"router", routing_label(s.routing)},
              {"capacity_factor", s.capacity_factor},
              {"threads", c.threads},
              {"seed", c.seed}};
}

namespace {

json result_to_json(const Result& r) {
  json j{{"case", case_to_json(r.kase)},
         {"impl", r.impl},
         {"status", to_string(r.status)},
         {"reason", r.reason}};
  if (r.correctness) {
    const Correctness& c = *r.correctness;
    j["correctness"] = {{"pass", c.pass},
                        {"max_abs_err", c.max_abs_err},
                        {"max_rel_err", c.max_rel_err},
                        {"nmse", c.nmse},
                        {"tolerance", c.tolerance},
                        {"tokens_checked", c.tokens_checked},
                        {"near_tie_tokens", c.near_tie_tokens},
                        {"near_tie_reselected", c.near_tie_reselected},
                        {"selection_mismatches", c.selection_mismatches}};
  } else {
    j["correctness"] = nullptr;
  }
  j["samples_s"] = r.samples_s;
  j["stats"] = {{"n", r.stats.n},           {"median_s", r.stats.median_s},
                {"mean_s", r.stats.mean_s}, {"stddev_s", r.stats.stddev_s},
                {"cv", r.stats.cv},         {"min_s", r.stats.min_s},
                {"max_s", r.stats.max_s}};
  j["derived"] = {{"tokens_per_s", r.derived.tokens_per_s},
                  {"gflops", r.derived.gflops},
                  {"gbytes_per_s", r.derived.gbytes_per_s}};
  j["load"] = {{"tokens_per_expert", r.load.tokens_per_expert},
               {"imbalance", r.load.imbalance},
               {"dropped", r.load.dropped},
               {"aux_loss", r.load.aux_loss},
               {"active_experts", r.load.active_experts}};
  j["blas"] = {{"core", r.blas.core}, {"threads", r.blas.threads}};
  j["setup_s"] = r.setup_s;
  j["layers"] = r.layers;
  return j;
}

}  // namespace

std::vector<std::string> report_warnings(const Report& report) {
  std::vector<std::string> w;
  const SystemInfo& s = report.system;
  if (s.build_type != "Release" && s.build_type != "RelWithDebInfo") {
    w.push_back(fmt::format("{} build: timings are not representative", s.build_type));
  }
  if (s.blas.fallback) {
    w.push_back(fmt::format("OpenBLAS runs its {} kernel, slower than this CPU supports ({})",
                            s.blas.core, best_blas_core(cpu_features())));
  }
  return w;
}

nlohmann::json to_json(const Report& report) {
  const SystemInfo& s = report.system;
  json results = json::array();
  for (const Result& r : report.results) results.push_back(result_to_json(r));
  return json{
      {"schema_version", kSchemaVersion},
      {"tool",
       {{"version", s.tool_version},
        {"git_commit", s.git_commit},
        {"build_type", s.build_type},
        {"compiler", s.compiler},
        {"cxx_flags", s.cxx_flags}}},
      {"context",
       {{"cpu", {{"model", s.cpu_model}, {"features", s.features}, {"threads", s.logical_cpus}}},
        {"memory", {{"total_bytes", s.memory_total_bytes},
                    {"available_bytes", s.memory_available_bytes}}},
        {"blas", {{"core", s.blas.core}, {"threads", s.blas.threads},
                  {"chosen_by", s.blas.chosen_by}, {"fallback", s.blas.fallback}}},
        {"cuda", s.cuda_available ? json(s.cuda) : json(nullptr)},
        {"cuda_status", s.cuda},
        {"warnings", report_warnings(report)}}},
      {"interrupted", report.interrupted},
      {"results", results},
      {"comparisons", json::array()}};
}

std::string render_json(const Report& report) { return to_json(report).dump(2) + "\n"; }

}  // namespace moe_bench
