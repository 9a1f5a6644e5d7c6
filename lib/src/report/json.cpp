#include <fmt/format.h>

#include <cstdlib>
#include <fstream>

#include "moe_bench/error.hpp"
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
              {"weights", to_string(s.weights)},
              {"activation", to_string(s.activation)},
              {"routing", to_string(s.skew)},
              {"router",
               {{"label", routing_label(s.routing)},
                {"scoring", to_string(s.routing.scoring)},
                {"renormalize", s.routing.renormalize},
                {"scale", s.routing.scale},
                {"selection_bias", s.routing.selection_bias},
                {"groups", s.routing.groups},
                {"topk_groups", s.routing.topk_groups}}},
              {"capacity_factor", s.capacity_factor},
              {"threads", c.threads},
              {"seed", c.seed}};
}

namespace {

json stats_to_json(const Stats& s) {
  return {{"n", s.n},
          {"median_s", s.median_s},
          {"mean_s", s.mean_s},
          {"stddev_s", s.stddev_s},
          {"cv", s.cv},
          {"min_s", s.min_s},
          {"max_s", s.max_s},
          {"p50_s", s.p50_s},
          {"p90_s", s.p90_s},
          {"p95_s", s.p95_s},
          {"p99_s", s.p99_s},
          {"median_ci_s", s.median_ci_s},
          {"mean_ci_s", s.mean_ci_s},
          {"outliers_mild", s.outliers_mild},
          {"outliers_severe", s.outliers_severe}};
}

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
  if (r.quantization_error) {
    const Correctness& q = *r.quantization_error;
    j["quantization_error"] = {
        {"nmse", q.nmse}, {"max_rel_err", q.max_rel_err}, {"tokens_checked", q.tokens_checked}};
  }
  j["samples_s"] = r.samples_s;
  j["stats"] = stats_to_json(r.stats);
  j["derived"] = {
      {"tokens_per_s", r.derived.tokens_per_s},   {"gflops", r.derived.gflops},
      {"gbytes_per_s", r.derived.gbytes_per_s},   {"roofline_pct", r.derived.roofline_pct},
      {"over_ceiling", r.derived.over_ceiling()}, {"bound", r.derived.bound}};
  j["load"] = {{"tokens_per_expert", r.load.tokens_per_expert},
               {"imbalance", r.load.imbalance},
               {"dropped", r.load.dropped},
               {"aux_loss", r.load.aux_loss},
               {"active_experts", r.load.active_experts}};
  j["blas"] = {{"core", r.blas.core}, {"threads", r.blas.threads}};
  j["setup_s"] = r.setup_s;
  j["layers"] = r.layers;
  j["round_bytes"] = r.round_bytes;
  j["inner_reps"] = r.inner_reps;
  j["notes"] = r.notes;
  json stages = json::array();  // an array keeps the stages in pipeline order
  for (const StageTime& s : r.stages) stages.push_back({{"name", s.name}, {"seconds", s.seconds}});
  j["stages_s"] = stages;
  if (r.serving) {
    const ServingInfo& s = *r.serving;
    j["serving"] = {{"rate_rps", s.rate_rps},
                    {"achieved_rps", s.achieved_rps},
                    {"tokens_per_s", s.tokens_per_s},
                    {"duration_s", s.duration_s},
                    {"latency_s",
                     {{"p50", s.p50_s},
                      {"p90", s.p90_s},
                      {"p95", s.p95_s},
                      {"p99", s.p99_s},
                      {"max", s.max_s}}},
                    {"p99_ci_s", s.p99_ci_s},
                    {"queue_s", {{"p50", s.queue_p50_s}, {"p99", s.queue_p99_s}}},
                    {"compute_mean_s", s.compute_mean_s},
                    {"batch_tokens", {{"mean", s.batch_tokens_mean}, {"max", s.batch_tokens_max}}},
                    {"batches", s.batches},
                    {"requests", s.requests},
                    {"unserved", s.unserved},
                    {"slo_s", s.slo_s},
                    {"meets_slo", s.meets_slo},
                    {"batcher_overhead_pct", s.batcher_overhead_pct}};
  }
  if (r.ep) {
    const EpInfo& e = *r.ep;
    j["ep"] = {{"ranks", e.ranks},
               {"placement", e.placement},
               {"replicas", e.replicas},
               {"tokens_per_rank", e.tokens_per_rank},
               {"exchange", e.exchange},
               {"stages_s",
                {{"route", e.route_s},
                 {"dispatch", e.dispatch_s},
                 {"compute", e.compute_s},
                 {"combine", e.combine_s},
                 {"dispatch_exchange", e.dispatch_exchange_s},
                 {"combine_exchange", e.combine_exchange_s}}},
               {"threads_per_rank", e.threads_per_rank},
               {"bytes_sent_per_rank", e.bytes_sent_per_rank},
               {"dispatch_bytes_per_rank", e.dispatch_bytes_per_rank},
               {"combine_bytes_per_rank", e.combine_bytes_per_rank},
               {"alltoall_gbytes_per_s", e.alltoall_gbytes_per_s},
               {"exchange_pct_of_alltoall", e.exchange_pct_of_alltoall},
               {"rows_per_rank", e.rows_per_rank},
               {"experts_per_rank", e.experts_per_rank},
               {"load_max_over_mean", e.load_max_over_mean},
               {"single_process_s", e.single_process_s},
               {"model_predicted_s", e.model_predicted_s}};
  }
  return j;
}

}  // namespace

nlohmann::json to_json(const Report& report) {
  const SystemInfo& s = report.system;
  json results = json::array();
  for (const Result& r : report.results) results.push_back(result_to_json(r));
  json comparisons = json::array();
  for (const Comparison& c : report.comparisons) {
    comparisons.push_back({{"case", case_to_json(c.kase)},
                           {"a", c.a},
                           {"b", c.b},
                           {"speedup", c.speedup.ratio},
                           {"speedup_ci", c.speedup.ci},
                           {"faster_with_confidence", c.speedup.faster_with_confidence}});
  }
  json checks = json::array();
  for (const CheckLine& c : report.checks) {
    checks.push_back({{"group", c.group},
                      {"name", c.name},
                      {"status", to_string(c.status)},
                      {"detail", c.detail}});
  }
  json peaks = json::array();
  for (const Peaks& p : report.peaks) {
    peaks.push_back({{"threads", p.threads},
                     {"fp32_gflops", p.fp32_gflops},
                     {"read_gbytes_per_s", p.read_gbytes_per_s},
                     {"fma_isa", p.fma_isa},
                     {"bf16_gflops", p.bf16_gflops},
                     {"amx_gflops", p.amx_gflops}});
  }
  // The design's context.peaks: the peaks at the most threads used.
  json main_peaks = nullptr;
  if (!report.peaks.empty()) {
    auto top =
        std::max_element(report.peaks.begin(), report.peaks.end(),
                         [](const Peaks& a, const Peaks& b) { return a.threads < b.threads; });
    main_peaks = peaks[top - report.peaks.begin()];
  }
  json doc{
      {"schema_version", kSchemaVersion},
      {"tool",
       {{"version", s.tool_version},
        {"git_commit", s.git_commit},
        {"build_type", s.build_type},
        {"compiler", s.compiler},
        {"cxx_flags", s.cxx_flags}}},
      {"context",
       {{"cpu",
         {{"model", s.cpu_model},
          {"features", s.features},
          {"isa_cap", s.isa_cap},
          {"threads", s.logical_cpus},
          {"caches", s.caches},
          {"governor", s.governor},
          {"turbo", s.turbo}}},
        {"load_average", s.load_average},
        {"steal_share", s.steal_share},
        {"memory",
         {{"total_bytes", s.memory_total_bytes}, {"available_bytes", s.memory_available_bytes}}},
        {"blas",
         {{"core", s.blas.core},
          {"threads", s.blas.threads},
          {"chosen_by", s.blas.chosen_by},
          {"fallback", s.blas.fallback}}},
        {"peaks", main_peaks},
        {"peaks_by_threads", peaks},
        {"device_peaks", report.device_peaks
                             ? json{{"device", report.device_peaks->device},
                                    {"copy_gbytes_per_s", report.device_peaks->copy_gbytes_per_s},
                                    {"bf16_tflops", report.device_peaks->bf16_tflops}}
                             : json(nullptr)},
        {"cache_mode", to_string(report.cache)},
        {"cuda", s.cuda_device
                     ? json{{"name", s.cuda_device->name},
                            {"sms", s.cuda_device->sms},
                            {"compute_capability", fmt::format("{}.{}", s.cuda_device->cc_major,
                                                               s.cuda_device->cc_minor)},
                            {"sm_clock_mhz", s.cuda_device->sm_clock_mhz},
                            {"memory_clock_mhz", s.cuda_device->mem_clock_mhz},
                            {"memory_bus_bits", s.cuda_device->bus_width_bits},
                            {"memory_bytes", s.cuda_device->memory_bytes},
                            {"driver", s.cuda_device->driver},
                            {"runtime", s.cuda_device->runtime}}
                     : json(nullptr)},
        {"cuda_status", s.cuda},
        {"warnings", report.warnings}}},
      {"interrupted", report.interrupted},
      {"validation", checks},
      {"results", results},
      {"comparisons", comparisons}};
  if (!report.serving_summary.empty()) {
    json summary = json::array();
    for (const ServingSummary& ss : report.serving_summary) {
      summary.push_back({{"impl", ss.impl},
                         {"max_rate_at_slo_rps", ss.max_rate_at_slo_rps},
                         {"slo_s", ss.slo_s}});
    }
    doc["serving_summary"] = summary;
  }
  return doc;
}

std::string render_json(const Report& report) { return to_json(report).dump(2) + "\n"; }

namespace {

Scoring parse_scoring(const std::string& s) {
  for (Scoring v : {Scoring::kSoftmax, Scoring::kSigmoid, Scoring::kSoftmaxTopk}) {
    if (to_string(v) == s) return v;
  }
  throw UsageError(fmt::format("unknown router scoring '{}'", s));
}

Status parse_status(const std::string& s) {
  for (Status v : {Status::kOk, Status::kFailed, Status::kSkipped}) {
    if (to_string(v) == s) return v;
  }
  throw UsageError(fmt::format("unknown result status '{}'", s));
}

Case case_from_json(const json& j) {
  Case c;
  Shape& s = c.shape;
  s.preset = j.at("preset").is_null() ? "" : j.at("preset").get<std::string>();
  s.experts = j.at("experts");
  s.top_k = j.at("top_k");
  s.d_model = j.at("d_model");
  s.d_ff = j.at("d_ff");
  s.tokens = j.at("tokens");
  s.shared_experts = j.at("shared_experts");
  s.d_ff_shared = j.at("d_ff_shared");
  c.dtype = parse_dtype(j.at("dtype").get<std::string>());
  if (j.contains("weights")) s.weights = parse_weights(j.at("weights").get<std::string>());
  s.activation = parse_activation(j.at("activation").get<std::string>());
  s.skew = parse_skew(j.at("routing").get<std::string>());
  const json& r = j.at("router");
  s.routing.scoring = parse_scoring(r.at("scoring"));
  s.routing.renormalize = r.at("renormalize");
  s.routing.scale = r.at("scale");
  s.routing.selection_bias = r.at("selection_bias");
  s.routing.groups = r.at("groups");
  s.routing.topk_groups = r.at("topk_groups");
  s.capacity_factor = j.at("capacity_factor");
  c.threads = j.at("threads");
  c.seed = j.at("seed");
  return c;
}

Stats stats_from_json(const json& j) {
  Stats s;
  s.n = j.at("n");
  s.median_s = j.at("median_s");
  s.mean_s = j.at("mean_s");
  s.stddev_s = j.at("stddev_s");
  s.cv = j.at("cv");
  s.min_s = j.at("min_s");
  s.max_s = j.at("max_s");
  s.p50_s = j.at("p50_s");
  s.p90_s = j.at("p90_s");
  s.p95_s = j.at("p95_s");
  s.p99_s = j.at("p99_s");
  s.median_ci_s = j.at("median_ci_s");
  s.mean_ci_s = j.at("mean_ci_s");
  s.outliers_mild = j.at("outliers_mild");
  s.outliers_severe = j.at("outliers_severe");
  return s;
}

Result result_from_json(const json& j) {
  Result r;
  r.kase = case_from_json(j.at("case"));
  r.impl = j.at("impl");
  r.status = parse_status(j.at("status"));
  r.reason = j.at("reason");
  if (!j.at("correctness").is_null()) {
    const json& c = j.at("correctness");
    r.correctness = Correctness{c.at("pass"),
                                c.at("max_abs_err"),
                                c.at("max_rel_err"),
                                c.at("nmse"),
                                c.at("tolerance"),
                                c.at("tokens_checked"),
                                c.at("near_tie_tokens"),
                                c.at("near_tie_reselected"),
                                c.at("selection_mismatches")};
  }
  if (j.contains("quantization_error") && !j.at("quantization_error").is_null()) {
    const json& q = j.at("quantization_error");
    Correctness c;
    c.nmse = q.at("nmse");
    c.max_rel_err = q.at("max_rel_err");
    c.tokens_checked = q.at("tokens_checked");
    r.quantization_error = c;
  }
  r.samples_s = j.at("samples_s").get<std::vector<double>>();
  r.stats = stats_from_json(j.at("stats"));
  const json& d = j.at("derived");
  r.derived = {d.at("tokens_per_s"), d.at("gflops"), d.at("gbytes_per_s"), d.at("roofline_pct"),
               d.at("bound")};
  const json& l = j.at("load");
  r.load.tokens_per_expert = l.at("tokens_per_expert").get<std::vector<int64_t>>();
  r.load.imbalance = l.at("imbalance");
  r.load.dropped = l.at("dropped");
  r.load.aux_loss = l.at("aux_loss");
  r.load.active_experts = l.at("active_experts");
  r.blas.core = j.at("blas").at("core");
  r.blas.threads = j.at("blas").at("threads");
  r.setup_s = j.at("setup_s");
  r.layers = j.at("layers");
  r.round_bytes = j.value("round_bytes", 0.0);
  r.inner_reps = j.at("inner_reps");
  r.notes = j.value("notes", std::string{});
  for (const json& stage : j.at("stages_s")) {
    r.stages.push_back({stage.at("name"), stage.at("seconds")});
  }
  if (j.contains("ep") && !j.at("ep").is_null()) {
    const json& e = j.at("ep");
    EpInfo ep;
    ep.ranks = e.at("ranks");
    ep.placement = e.at("placement");
    ep.replicas = e.at("replicas");
    ep.tokens_per_rank = e.at("tokens_per_rank");
    ep.exchange = e.value("exchange", std::string("alltoallv"));  // before windows: alltoallv
    const json& st = e.at("stages_s");
    ep.route_s = st.at("route");
    ep.dispatch_s = st.at("dispatch");
    ep.compute_s = st.at("compute");
    ep.combine_s = st.at("combine");
    ep.dispatch_exchange_s = st.value("dispatch_exchange", 0.0);
    ep.combine_exchange_s = st.value("combine_exchange", 0.0);
    ep.threads_per_rank = e.value("threads_per_rank", 1);
    ep.bytes_sent_per_rank = e.at("bytes_sent_per_rank");
    ep.dispatch_bytes_per_rank = e.value("dispatch_bytes_per_rank", 0.0);
    ep.combine_bytes_per_rank = e.value("combine_bytes_per_rank", 0.0);
    ep.alltoall_gbytes_per_s = e.at("alltoall_gbytes_per_s");
    ep.exchange_pct_of_alltoall = e.at("exchange_pct_of_alltoall");
    ep.rows_per_rank = e.at("rows_per_rank").get<std::vector<int64_t>>();
    if (e.contains("experts_per_rank")) {
      ep.experts_per_rank = e.at("experts_per_rank").get<std::vector<int64_t>>();
    }
    ep.load_max_over_mean = e.at("load_max_over_mean");
    ep.single_process_s = e.at("single_process_s");
    ep.model_predicted_s = e.at("model_predicted_s");
    r.ep = ep;
  }
  return r;
}

Report report_from_json(const json& j) {
  Report report;
  SystemInfo& s = report.system;
  const json& tool = j.at("tool");
  s.tool_version = tool.at("version");
  s.git_commit = tool.at("git_commit");
  s.build_type = tool.at("build_type");
  s.compiler = tool.at("compiler");
  s.cxx_flags = tool.at("cxx_flags");
  const json& ctx = j.at("context");
  const json& cpu = ctx.at("cpu");
  s.cpu_model = cpu.at("model");
  s.features = cpu.at("features").get<std::vector<std::string>>();
  s.logical_cpus = cpu.at("threads");
  s.caches = cpu.at("caches");
  s.governor = cpu.at("governor");
  s.turbo = cpu.at("turbo");
  s.load_average = ctx.at("load_average");
  s.isa_cap = cpu.value("isa_cap", std::string());
  s.steal_share = ctx.value("steal_share", -1.0);
  s.memory_total_bytes = ctx.at("memory").at("total_bytes");
  s.memory_available_bytes = ctx.at("memory").at("available_bytes");
  const json& blas = ctx.at("blas");
  s.blas = {blas.at("core"), blas.at("threads"), blas.at("chosen_by"), blas.at("fallback")};
  for (const json& p : ctx.at("peaks_by_threads")) {
    report.peaks.push_back({p.at("threads"), p.at("fp32_gflops"), p.at("read_gbytes_per_s"),
                            p.at("fma_isa"), p.value("bf16_gflops", 0.0),
                            p.value("amx_gflops", 0.0)});
  }
  report.cache = ctx.at("cache_mode") == "warm" ? CacheMode::kWarm : CacheMode::kCold;
  if (ctx.contains("device_peaks") && !ctx.at("device_peaks").is_null()) {
    const json& dp = ctx.at("device_peaks");
    report.device_peaks =
        DevicePeaks{dp.at("device"), dp.at("copy_gbytes_per_s"), dp.at("bf16_tflops")};
  }
  s.cuda = ctx.at("cuda_status");
  s.cuda_available = !ctx.at("cuda").is_null();
  if (ctx.at("cuda").is_object()) {
    const json& c = ctx.at("cuda");
    SystemInfo::CudaDevice d;
    d.name = c.at("name");
    d.sms = c.at("sms");
    const std::string cc = c.at("compute_capability");
    d.cc_major = std::atoi(cc.c_str());
    d.cc_minor = cc.find('.') != std::string::npos ? std::atoi(cc.c_str() + cc.find('.') + 1) : 0;
    d.sm_clock_mhz = c.at("sm_clock_mhz");
    d.mem_clock_mhz = c.at("memory_clock_mhz");
    d.bus_width_bits = c.at("memory_bus_bits");
    d.memory_bytes = c.at("memory_bytes");
    d.driver = c.at("driver");
    d.runtime = c.at("runtime");
    s.cuda_device = d;
  }
  report.warnings = ctx.at("warnings").get<std::vector<std::string>>();
  report.interrupted = j.at("interrupted");
  for (const json& c : j.value("validation", json::array())) {
    report.checks.push_back(
        {c.at("group"), c.at("name"), parse_status(c.at("status")), c.at("detail")});
  }
  for (const json& r : j.at("results")) report.results.push_back(result_from_json(r));
  for (const json& c : j.at("comparisons")) {
    Comparison cmp;
    cmp.kase = case_from_json(c.at("case"));
    cmp.a = c.at("a");
    cmp.b = c.at("b");
    cmp.speedup = {c.at("speedup"), c.at("speedup_ci"), c.at("faster_with_confidence")};
    report.comparisons.push_back(cmp);
  }
  return report;
}

}  // namespace

Report parse_report(std::string_view text, std::string_view source) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception&) {
    throw UsageError(fmt::format("{}: not valid JSON", source));
  }
  if (!j.is_object() || !j.contains("schema_version")) {
    throw UsageError(fmt::format("{}: not a moe-bench report (no schema_version)", source));
  }
  if (j["schema_version"] != kSchemaVersion) {
    throw UsageError(fmt::format("{}: schema version {} is not the supported version {}", source,
                                 j["schema_version"].dump(), kSchemaVersion));
  }
  try {
    return report_from_json(j);
  } catch (const json::exception& e) {
    throw UsageError(fmt::format("{}: malformed moe-bench report ({})", source, e.what()));
  }
}

Report read_report(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UsageError(fmt::format("cannot read '{}'", path.string()));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return parse_report(text, path.string());
}

}  // namespace moe_bench
