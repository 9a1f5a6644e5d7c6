#include "moe_bench/report.hpp"

namespace moe_bench {

std::string render_jsonl(const Report& report) {
  std::string out;
  for (const Result& r : report.results) {
    nlohmann::ordered_json row;
    for (auto& [key, value] : flat_row(r)) row[key] = value;
    out += row.dump() + "\n";
  }
  return out;
}

}  // namespace moe_bench
