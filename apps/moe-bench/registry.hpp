#pragma once

#include <memory>
#include <string_view>

#include "moe_bench/kernel.hpp"

namespace moe_bench {

/// The one list of implementations (registry.cpp): the core, every implementation and this list,
/// in that order of dependency.
const Registry& registry();

/// Creates a registered implementation by name; throws UsageError naming the known ones otherwise.
inline std::unique_ptr<Kernel> make_kernel(std::string_view name) { return registry().make(name); }

}  // namespace moe_bench
