#include "moe_bench/presets.hpp"

#include <fmt/format.h>

#include <array>

#include "moe_bench/error.hpp"

namespace moe_bench {
namespace {

Shape shape(const char* name, int64_t d, int64_t f, int64_t e, int64_t k, RoutingConfig r,
            Activation a = Activation::kSwiglu, int64_t shared = 0, double capacity = 0) {
  Shape s;
  s.preset = name;
  s.d_model = d;
  s.d_ff = f;
  s.experts = e;
  s.top_k = k;
  s.routing = r;
  s.activation = a;
  s.shared_experts = shared;
  s.d_ff_shared = shared > 0 ? f : 0;
  s.capacity_factor = capacity;
  return s;
}

const RoutingConfig kRenorm{Scoring::kSoftmax, true, 1.0, false, 0, 0};
const RoutingConfig kNoRenorm{Scoring::kSoftmax, false, 1.0, false, 0, 0};
const RoutingConfig kDeepSeekV3{Scoring::kSigmoid, true, 2.5, true, 8, 4};
const RoutingConfig kGptOss{Scoring::kSoftmaxTopk, true, 1.0, false, 0, 0};

const std::array<Preset, 10>& all_presets() {
  static const std::array<Preset, 10> kPresets{{
      {"mixtral-8x7b", shape("mixtral-8x7b", 4096, 14336, 8, 2, kRenorm), "Mixtral 8x7B"},
      {"mixtral-8x22b", shape("mixtral-8x22b", 6144, 16384, 8, 2, kRenorm), "Mixtral 8x22B"},
      {"switch-base-8",
       shape("switch-base-8", 768, 3072, 8, 1, kNoRenorm, Activation::kGelu, 0, 1.25),
       "Switch-Base-8: top-1, capacity factor 1.25, GELU MLP"},
      {"deepseek-v2-lite",
       shape("deepseek-v2-lite", 2048, 1408, 64, 6, kNoRenorm, Activation::kSwiglu, 2),
       "DeepSeek-V2-Lite: 2 shared experts"},
      {"deepseek-v3", shape("deepseek-v3", 7168, 2048, 256, 8, kDeepSeekV3, Activation::kSwiglu, 1),
       "DeepSeek-V3: sigmoid + selection bias, 8 groups -> top-4, x2.5, 1 shared expert"},
      {"qwen3-30b-a3b", shape("qwen3-30b-a3b", 2048, 768, 128, 8, kRenorm), "Qwen3-30B-A3B"},
      {"qwen3-235b-a22b", shape("qwen3-235b-a22b", 4096, 1536, 128, 8, kRenorm), "Qwen3-235B-A22B"},
      {"olmoe-1b-7b", shape("olmoe-1b-7b", 2048, 1024, 64, 8, kNoRenorm), "OLMoE-1B-7B"},
      {"gpt-oss-20b", shape("gpt-oss-20b", 2880, 2880, 32, 4, kGptOss, Activation::kSwigluOai),
       "GPT-OSS-20B: softmax over the top-k logits, clamped SwiGLU"},
      {"gpt-oss-120b", shape("gpt-oss-120b", 2880, 2880, 128, 4, kGptOss, Activation::kSwigluOai),
       "GPT-OSS-120B"},
  }};
  return kPresets;
}

constexpr std::array<int64_t, 3> kTokensA{1, 32, 512};
constexpr std::array<int64_t, 2> kTokensB{16, 1024};

Shape workload_shape(int64_t e, int64_t k, int64_t d, int64_t f) {
  Shape s;
  s.experts = e;
  s.top_k = k;
  s.d_model = d;
  s.d_ff = f;
  return s;
}

template <typename T>
std::string names_of(const T& items) {
  std::string out;
  for (const auto& p : items) out += (out.empty() ? "" : ", ") + p.name;
  return out;
}

}  // namespace

std::span<const Preset> presets() { return all_presets(); }

const Preset& find_preset(std::string_view name) {
  for (const auto& p : all_presets()) {
    if (p.name == name) return p;
  }
  throw UsageError(fmt::format("unknown preset '{}' (known: {})", name, names_of(all_presets())));
}

std::span<const Workload> standard_workloads() {
  static const std::array<Workload, 2> kWorkloads{{
      {"A", workload_shape(8, 2, 1024, 4096), kTokensA},
      {"B", workload_shape(64, 8, 2048, 1024), kTokensB},
  }};
  return kWorkloads;
}

const Workload& find_workload(std::string_view name) {
  for (const auto& w : standard_workloads()) {
    if (w.name == name) return w;
  }
  throw UsageError(fmt::format("unknown workload '{}' (known: A, B)", name));
}

}  // namespace moe_bench
