#pragma once

#include <string>
#include <string_view>

#include "moe_bench/result.hpp"
#include "moe_bench/stats.hpp"

namespace moe_bench {

/// "4.421 ms", "12.3 us", "1.203 s"; "-" for zero.
std::string format_duration(double seconds);
/// "[1.23, 1.45]" after multiplying by `scale`.
std::string format_interval(const Interval& i, double scale, int decimals);
/// The scale and unit that show `seconds` readably (us, ms or s).
double time_scale(double seconds, const char** unit);
/// An expert-parallel result's modelled step in ms and its error against the measured median:
/// "17.460 (+5.9%)" (`unit` after the number, e.g. " ms"), or "-" without a model.
std::string ep_model_text(const EpInfo& e, double median_s, std::string_view unit);

/// "hypervisor steal 0.3% of CPU time", or "hypervisor steal unknown" (share -1).
std::string steal_text(double share);

}  // namespace moe_bench
