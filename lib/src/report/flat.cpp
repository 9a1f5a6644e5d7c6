#include "moe_bench/report.hpp"

namespace moe_bench {

std::vector<std::pair<std::string, nlohmann::json>> flat_row(const Result& r) {
  using nlohmann::json;
  const Shape& s = r.kase.shape;
  const bool checked = r.correctness.has_value();
  return {
      {"impl", r.impl},
      {"status", to_string(r.status)},
      {"preset", s.preset},
      {"experts", s.experts},
      {"top_k", s.top_k},
      {"d_model", s.d_model},
      {"d_ff", s.d_ff},
      {"tokens", s.tokens},
      {"shared_experts", s.shared_experts},
      {"dtype", to_string(r.kase.dtype)},
      {"weights", to_string(s.weights)},
      {"activation", to_string(s.activation)},
      {"routing", to_string(s.skew)},
      {"router", routing_label(s.routing)},
      {"capacity_factor", s.capacity_factor},
      {"threads", r.kase.threads},
      {"seed", r.kase.seed},
      {"n", r.stats.n},
      {"median_s", r.stats.median_s},
      {"mean_s", r.stats.mean_s},
      {"stddev_s", r.stats.stddev_s},
      {"median_ci_low_s", r.stats.median_ci_s[0]},
      {"median_ci_high_s", r.stats.median_ci_s[1]},
      {"cv", r.stats.cv},
      {"min_s", r.stats.min_s},
      {"max_s", r.stats.max_s},
      {"p90_s", r.stats.p90_s},
      {"p99_s", r.stats.p99_s},
      {"outliers_mild", r.stats.outliers_mild},
      {"outliers_severe", r.stats.outliers_severe},
      {"tokens_per_s", r.derived.tokens_per_s},
      {"gflops", r.derived.gflops},
      {"gbytes_per_s", r.derived.gbytes_per_s},
      {"roofline_pct", r.derived.roofline_pct},
      {"bound", r.derived.bound},
      {"pass", checked ? json(r.correctness->pass) : json(nullptr)},
      {"max_rel_err", checked ? json(r.correctness->max_rel_err) : json(nullptr)},
      {"nmse", checked ? json(r.correctness->nmse) : json(nullptr)},
      {"quant_nmse", r.quantization_error ? json(r.quantization_error->nmse) : json(nullptr)},
      {"quant_max_rel_err",
       r.quantization_error ? json(r.quantization_error->max_rel_err) : json(nullptr)},
      {"imbalance", r.load.imbalance},
      {"dropped", r.load.dropped},
      {"aux_loss", r.load.aux_loss},
      {"blas_core", r.blas.core},
      {"blas_threads", r.blas.threads},
      {"layers", r.layers},
      {"reason", r.reason},
  };
}

}  // namespace moe_bench
