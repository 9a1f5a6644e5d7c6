#include "moe_bench/report.hpp"

namespace moe_bench {
namespace {

// RFC 4180: quote fields holding a comma, quote or newline; double the quotes inside.
std::string csv_field(const nlohmann::json& v) {
  if (v.is_null()) return "";
  std::string s = v.is_string() ? v.get<std::string>() : v.dump();
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

}  // namespace

std::string render_csv(const Report& report) {
  std::string out;
  const Result empty;
  bool first = true;
  for (auto& [key, value] : flat_row(empty)) {
    out += (first ? "" : ",") + key;
    first = false;
  }
  out += "\n";
  for (const Result& r : report.results) {
    first = true;
    for (auto& [key, value] : flat_row(r)) {
      out += (first ? "" : ",") + csv_field(value);
      first = false;
    }
    out += "\n";
  }
  return out;
}

}  // namespace moe_bench
