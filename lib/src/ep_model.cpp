#include "moe_bench/ep_model.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>

#include "moe_bench/error.hpp"

namespace moe_bench {

std::vector<EpCalibration> load_ep_model(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw UsageError(fmt::format("--ep-model {}: cannot be read", path));
  std::vector<EpCalibration> out;
  try {
    const auto j = nlohmann::json::parse(in);
    if (j.at("schema").get<std::string>() != "moe-bench-ep-model/2") {
      throw UsageError(fmt::format(
          "--ep-model {}: schema {} is not moe-bench-ep-model/2 (scripts/ep-model.py --save)", path,
          j.at("schema").dump()));
    }
    for (const auto& e : j.at("cases")) {
      const auto& c = e.at("case");
      EpCalibration cal;
      cal.preset = c.at("preset").get<std::string>();
      cal.activation = c.at("activation").get<std::string>();
      cal.dtype = c.at("dtype").get<std::string>();
      cal.experts = c.at("experts");
      cal.top_k = c.at("top_k");
      cal.d_model = c.at("d_model");
      cal.d_ff = c.at("d_ff");
      cal.shared_experts = c.at("shared_experts");
      cal.d_ff_shared = c.at("d_ff_shared");
      cal.tokens_per_rank = c.at("tokens_per_rank");
      cal.threads_per_rank = c.at("threads_per_rank");
      cal.overhead_s = e.at("overhead_s");
      cal.row_s = e.at("row_s");
      cal.expert_s = e.at("expert_s");
      cal.message_s = e.at("message_s");
      cal.byte_s = e.at("byte_s");
      out.push_back(std::move(cal));
    }
  } catch (const nlohmann::json::exception& e) {
    throw UsageError(
        fmt::format("--ep-model {}: not a calibration from scripts/ep-model.py "
                    "--save ({})",
                    path, e.what()));
  }
  return out;
}

const EpCalibration* find_calibration(const std::vector<EpCalibration>& model, const Case& c,
                                      const EpInfo& ep) {
  const Shape& s = c.shape;
  for (const auto& cal : model) {
    if (cal.preset == s.preset && cal.experts == s.experts && cal.top_k == s.top_k &&
        cal.d_model == s.d_model && cal.d_ff == s.d_ff && cal.shared_experts == s.shared_experts &&
        cal.d_ff_shared == s.d_ff_shared && cal.activation == to_string(s.activation) &&
        cal.dtype == to_string(c.dtype) && cal.tokens_per_rank == ep.tokens_per_rank &&
        cal.threads_per_rank == ep.threads_per_rank) {
      return &cal;
    }
  }
  return nullptr;
}

double bound_finish_s(std::span<const double> works, int cores, int threads) {
  const int slots = std::max(1, std::max(cores, 1) / std::max(threads, 1));
  std::vector<double> per_slot(static_cast<size_t>(slots), 0.0);
  for (size_t r = 0; r < works.size(); ++r) per_slot[r % per_slot.size()] += works[r];
  return *std::max_element(per_slot.begin(), per_slot.end());
}

double predict_step_s(const EpCalibration& cal, const EpInfo& ep, int cores) {
  std::vector<double> works;
  for (size_t r = 0; r < ep.rows_per_rank.size() && r < ep.experts_per_rank.size(); ++r) {
    works.push_back(cal.overhead_s + cal.row_s * static_cast<double>(ep.rows_per_rank[r]) +
                    cal.expert_s * static_cast<double>(ep.experts_per_rank[r]));
  }
  double exchange = 0;
  if (ep.ranks > 1) {
    exchange = 2.0 * (ep.ranks - 1) * cal.message_s +
               (ep.dispatch_bytes_per_rank + ep.combine_bytes_per_rank) * cal.byte_s;
  }
  const double oversubscribed =
      std::max(1.0, static_cast<double>(ep.ranks) * ep.threads_per_rank / std::max(cores, 1));
  return bound_finish_s(works, cores, ep.threads_per_rank) + exchange * oversubscribed;
}

}  // namespace moe_bench
