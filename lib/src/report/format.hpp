#pragma once

#include <string>

#include "moe_bench/stats.hpp"

namespace moe_bench {

/// "4.421 ms", "12.3 us", "1.203 s"; "-" for zero.
std::string format_duration(double seconds);
/// "[1.23, 1.45]" after multiplying by `scale`.
std::string format_interval(const Interval& i, double scale, int decimals);
/// The scale and unit that show `seconds` readably (us, ms or s).
double time_scale(double seconds, const char** unit);

}  // namespace moe_bench
