#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "moe_bench/result.hpp"

namespace moe_bench {

/// The axes of a run as the user gave them; an empty list means "not given".
struct Axes {
  std::vector<std::string> presets;
  std::vector<std::string> workloads;
  std::vector<int64_t> experts, top_k, d_model, d_ff, tokens;
  std::vector<std::string> routing;  ///< skews: uniform, zipf:S, hot:P
  std::vector<double> capacity_factor;
  std::vector<int> threads;
  std::vector<std::string> dtypes;
  std::vector<std::string> weights;  ///< weight formats: same, int8, q4
  std::optional<std::string> activation;
  uint64_t seed = 42;
  int extra_weight_copies = 0;  ///< copies the chosen implementations keep (memory check)
};

/// The cases of a run: the cartesian product of every axis over the base shapes (the presets
/// asked for, else the workloads asked for, else the standard workloads when no shape axis is
/// given, else one custom shape). Throws UsageError for invalid input, including a case whose
/// memory need exceeds what this machine has available.
std::vector<Case> plan_cases(const Axes& axes);

/// Bytes one layer's weights take in this process: as stored, except that a quantized layer
/// holds a byte of code a weight and float scales (QuantMatrix: q4 about twice its stored size).
/// An implementation's copy in the stored format is counted apart.
int64_t layer_held_bytes(const Shape& s, Dtype d);

/// Bytes a case needs: weights of `layers` layers plus activations and workspaces.
int64_t case_memory_bytes(const Case& c, int64_t layers = 1);

}  // namespace moe_bench
