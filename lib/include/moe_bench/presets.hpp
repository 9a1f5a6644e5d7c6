#pragma once

#include <span>
#include <string>
#include <string_view>

#include "moe_bench/shape.hpp"

namespace moe_bench {

/// A real model's MoE layer: its shape (tokens left at the default) and where it comes from.
struct Preset {
  std::string name;
  Shape shape;
  std::string note;
};

/// All real-model presets of the design, in a fixed order.
std::span<const Preset> presets();
/// Returns the preset of that name; throws UsageError naming the known presets otherwise.
const Preset& find_preset(std::string_view name);

/// A standard workload of the design: a shape and the token counts it is run at.
struct Workload {
  std::string name;
  Shape shape;
  std::span<const int64_t> tokens;
};
std::span<const Workload> standard_workloads();
const Workload& find_workload(std::string_view name);

}  // namespace moe_bench
