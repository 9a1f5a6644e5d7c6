#include "moe_bench/shape.hpp"

#include <catch2/catch.hpp>

#include "moe_bench/error.hpp"
#include "moe_bench/plan.hpp"
#include "moe_bench/presets.hpp"

using namespace moe_bench;

TEST_CASE("invalid shapes are named with the reason") {
  Shape s;
  CHECK_FALSE(invalid_reason(s).has_value());
  s.top_k = 9;
  CHECK(invalid_reason(s).value() == "--top-k 9 exceeds --experts 8");
  s = Shape{};
  s.d_ff = 0;
  CHECK(invalid_reason(s).value().find("--d-ff must be positive") != std::string::npos);
  s = Shape{};
  s.tokens = -3;
  CHECK(invalid_reason(s).has_value());
  s = Shape{};
  s.experts = 1 << 20;
  s.d_model = 1 << 20;
  s.d_ff = 1 << 20;
  CHECK(invalid_reason(s).value().find("overflow") != std::string::npos);
}

TEST_CASE("FLOPs and bytes follow the design's counts") {
  Shape s;  // E8 k2 d1024 f4096 T32, SwiGLU
  const double router = 2.0 * 32 * 1024 * 8;
  const double experts = 2.0 * 32 * 2 * 1024 * 4096 * 3;
  CHECK(forward_flops(s) == Approx(router + experts));
  s.activation = Activation::kGelu;
  CHECK(forward_flops(s) == Approx(router + experts * 2 / 3));
  s.activation = Activation::kSwiglu;
  CHECK(expert_weight_bytes(s, Dtype::kF32) == 3 * 1024 * 4096 * 4);
  const double bytes = 8.0 * 1024 * 4 + 5.0 * 3 * 1024 * 4096 * 4 + 2.0 * 32 * 1024 * 4;
  CHECK(forward_bytes(s, Dtype::kF32, 5) == Approx(bytes));
}

TEST_CASE("routing skews parse and reject nonsense") {
  CHECK(parse_skew("uniform").kind == Skew::Kind::kUniform);
  CHECK(parse_skew("zipf:1.2").param == Approx(1.2));
  CHECK(parse_skew("hot:0.5").kind == Skew::Kind::kHot);
  CHECK_THROWS_AS(parse_skew("hot:1.5"), UsageError);
  CHECK_THROWS_AS(parse_skew("zipf:abc"), UsageError);
  CHECK_THROWS_AS(parse_skew("gauss"), UsageError);
  CHECK(to_string(parse_skew("zipf:1.2")) == "zipf:1.2");
}

TEST_CASE("all ten presets are valid shapes with the design's sizes") {
  REQUIRE(presets().size() == 10);
  for (const auto& p : presets()) {
    INFO(p.name);
    CHECK_FALSE(invalid_reason(p.shape).has_value());
  }
  const Shape& v3 = find_preset("deepseek-v3").shape;
  CHECK(v3.experts == 256);
  CHECK(v3.routing.groups == 8);
  CHECK(v3.routing.topk_groups == 4);
  CHECK(v3.routing.scale == 2.5);
  CHECK(find_preset("mixtral-8x7b").shape.d_ff == 14336);
  CHECK_THROWS_AS(find_preset("llama"), UsageError);
}

TEST_CASE("the memory a quantized case needs counts its codes and one expert in f32") {
  Shape s = find_preset("deepseek-v3").shape;
  s.tokens = 1;
  const Case same{s, Dtype::kBF16, 2, 1};
  Shape q4 = s, i8 = s;
  q4.weights = WeightFormat::kQ4;
  i8.weights = WeightFormat::kInt8;
  const Case quantized{q4, Dtype::kBF16, 2, 1};
  // The layer holds its codes, a byte a weight, and float scales: int8 as stored, q4 twice.
  CHECK(layer_held_bytes(i8, Dtype::kBF16) == layer_weight_bytes(i8, Dtype::kBF16));
  CHECK(layer_held_bytes(q4, Dtype::kBF16) == 2 * layer_weight_bytes(q4, Dtype::kBF16));
  // Beside the layers, the oracles hold one expert's three matrices in f32 at a time; no f32
  // layer, no twin: deepseek-v3 in q4 with cpu's packed copy fits a 24 GiB machine, which the
  // f32 values beside the codes (and an f32 twin) did not.
  const int64_t expert_f32 = expert_weight_bytes(s, Dtype::kF32);
  CHECK(case_memory_bytes(quantized, 1) - layer_held_bytes(q4, Dtype::kBF16) >= expert_f32);
  CHECK(case_memory_bytes(quantized, 1) - layer_held_bytes(q4, Dtype::kBF16) <
        case_memory_bytes(same, 1) - layer_held_bytes(s, Dtype::kBF16) + 2 * expert_f32);
  const int64_t with_copy = case_memory_bytes(quantized, 1) + layer_weight_bytes(q4, Dtype::kBF16);
  CHECK(with_copy < int64_t{20} << 30);
  CHECK(case_memory_bytes(same, 1) > int64_t{20} << 30);
  // Cold copies are counted each as the problem holds it.
  CHECK(case_memory_bytes(quantized, 3) - case_memory_bytes(quantized, 1) ==
        2 * layer_held_bytes(q4, Dtype::kBF16));
}
