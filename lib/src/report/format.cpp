#include "format.hpp"

#include <fmt/format.h>

namespace moe_bench {

std::string format_duration(double s) {
  if (s <= 0) return "-";
  if (s < 1e-3) return fmt::format("{:.1f} us", s * 1e6);
  if (s < 1) return fmt::format("{:.3f} ms", s * 1e3);
  return fmt::format("{:.3f} s", s);
}

std::string format_interval(const Interval& i, double scale, int decimals) {
  return fmt::format("[{:.{}f}, {:.{}f}]", i[0] * scale, decimals, i[1] * scale, decimals);
}

double time_scale(double s, const char** unit) {
  if (s < 1e-3) {
    *unit = "us";
    return 1e6;
  }
  if (s < 1) {
    *unit = "ms";
    return 1e3;
  }
  *unit = "s";
  return 1;
}

std::string ep_model_text(const EpInfo& e, double median_s, std::string_view unit) {
  if (e.model_predicted_s <= 0) return "-";
  return fmt::format("{:.3f}{} ({:+.1f}%)", e.model_predicted_s * 1e3, unit,
                     100.0 * (e.model_predicted_s - median_s) / median_s);
}

std::string steal_text(double share) {
  if (share < 0) return "hypervisor steal unknown";
  return fmt::format("hypervisor steal {:.1f}% of CPU time", share * 100);
}

}  // namespace moe_bench
