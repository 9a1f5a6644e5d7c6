// Quantized expert weights (--weights int8|q4): the formats, the byte counts, and every
// implementation that takes them against the FP64 oracle on the dequantized weights, under every
// ISA cap this CPU supports.
#include "moe_bench/quant.hpp"

#include <omp.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <map>
#include <string>
#include <string_view>

#include "apps/moe-bench/registry.hpp"
#include "lib/kernels/cpu/a8_isa.hpp"
#include "lib/kernels/cpu/cpu_select.hpp"
#include "moe_bench/correctness.hpp"
#include "moe_bench/dtype.hpp"
#include "moe_bench/grid.hpp"
#include "moe_bench/kernel.hpp"
#include "moe_bench/problem.hpp"
#include "moe_bench/sysinfo.hpp"

using namespace moe_bench;

TEST_CASE("int8 quantizes each row to codes in [-127, 127] with scale max|w| / 127") {
  const int64_t rows = 5, cols = 70;
  std::vector<float> w(rows * cols);
  fill_normal(w.data(), rows * cols, 0.1, 3, 0);
  w[2 * cols + 7] = 0;
  for (int64_t c = 0; c < cols; ++c) w[4 * cols + c] = 0;  // an all-zero row
  const std::vector<float> original = w;
  const QuantMatrix q = quantize(WeightFormat::kInt8, w.data(), rows, cols);
  REQUIRE(q.scales.size() == rows);
  for (int64_t r = 0; r < rows; ++r) {
    float amax = 0;
    for (int64_t c = 0; c < cols; ++c) amax = std::max(amax, std::fabs(original[r * cols + c]));
    if (amax > 0) CHECK(q.scales[r] == amax / 127.0f);
    bool reaches = false;
    for (int64_t c = 0; c < cols; ++c) {
      const int8_t code = q.codes[r * cols + c];
      CHECK(code >= -127);
      reaches |= code == 127 || code == -127 || amax == 0;
      CHECK(w[r * cols + c] == static_cast<float>(code) * q.scales[r]);
      CHECK(std::fabs(w[r * cols + c] - original[r * cols + c]) <= 0.5001f * q.scales[r]);
    }
    CHECK(reaches);
  }
  for (int64_t c = 0; c < cols; ++c) CHECK(w[4 * cols + c] == 0.0f);
  std::vector<float> out(2 * cols);
  dequantize_rows(WeightFormat::kInt8, q, 1, 2, out.data());
  CHECK(std::equal(out.begin(), out.end(), w.begin() + cols));
}

TEST_CASE("q4 quantizes groups of 32 to codes in [-8, 7] with an f16 scale, the extreme at -8") {
  const int64_t rows = 3, cols = 96;
  std::vector<float> w(rows * cols);
  fill_normal(w.data(), rows * cols, 0.05, 9, 1);
  const std::vector<float> original = w;
  const QuantMatrix q = quantize(WeightFormat::kQ4, w.data(), rows, cols);
  REQUIRE(q.scales.size() == rows * cols / kQ4Group);
  for (int64_t g = 0; g < rows * cols / kQ4Group; ++g) {
    const float s = q.scales[g];
    CHECK(round_to(Dtype::kF16, s) == s);
    int64_t extreme = g * kQ4Group;
    for (int64_t i = g * kQ4Group; i < (g + 1) * kQ4Group; ++i) {
      if (std::fabs(original[i]) > std::fabs(original[extreme])) extreme = i;
      CHECK(q.codes[i] >= -8);
      CHECK(q.codes[i] <= 7);
      CHECK(w[i] == static_cast<float>(q.codes[i]) * s);  // exact: 4 bits times an f16
      // Half a step, or a whole one where the value opposite the extreme clips at 7 (the
      // range [-8, 7] is one step short on that side, as in Q4_0).
      const float steps = q.codes[i] == 7 ? 1.0001f : 0.5001f;
      CHECK(std::fabs(w[i] - original[i]) <= steps * std::fabs(s));
    }
    CHECK(q.codes[extreme] == -8);
  }
  std::vector<float> bad(10 * 33);
  CHECK_THROWS(quantize(WeightFormat::kQ4, bad.data(), 10, 33));
}

TEST_CASE("quantized weights are counted in their stored bytes") {
  Shape s = make_shape(8, 2, 1024, 4096, 1);
  const int64_t n = 1024 * 4096;
  CHECK(expert_weight_bytes(s, Dtype::kF32) == 3 * n * 4);
  s.weights = WeightFormat::kInt8;
  CHECK(expert_weight_bytes(s, Dtype::kF32) == 3 * n + (2 * 4096 + 1024) * 4);
  CHECK(expert_weight_bytes(s, Dtype::kBF16) == expert_weight_bytes(s, Dtype::kF32));
  s.weights = WeightFormat::kQ4;
  CHECK(expert_weight_bytes(s, Dtype::kF32) == 3 * n / 2 + 3 * n / 32 * 2);
  // The router is not quantized: a layer is the router in the dtype plus the experts as stored.
  CHECK(layer_weight_bytes(s, Dtype::kBF16) ==
        8 * 1024 * 2 + 8 * expert_weight_bytes(s, Dtype::kBF16));
}

TEST_CASE("q4 refuses input dimensions that are not a multiple of its group, naming them") {
  Shape s = make_shape(4, 2, 1000, 64, 2);
  s.weights = WeightFormat::kQ4;
  CHECK(invalid_reason(s).value_or("").find("--weights q4 needs --d-model a multiple of 32") !=
        std::string::npos);
  s.d_model = 64;
  s.d_ff = 48;
  CHECK(invalid_reason(s).value_or("").find("--d-ff a multiple of 32") != std::string::npos);
  s.d_ff = 64;
  CHECK_FALSE(invalid_reason(s).has_value());
  s.weights = WeightFormat::kInt8;
  s.d_model = 1000;
  CHECK_FALSE(invalid_reason(s).has_value());  // int8 scales whole rows: any width
  CHECK_THROWS(parse_weights("int4"));
}

TEST_CASE("a quantized problem holds its codes only, and its twin regenerates the f32 weights") {
  Shape s = make_shape(4, 2, 64, 32, 3);
  s.shared_experts = 1;
  s.d_ff_shared = 64;
  for (WeightFormat format : {WeightFormat::kInt8, WeightFormat::kQ4}) {
    INFO(to_string(format));
    s.weights = format;
    const Problem p = make_problem(s, Dtype::kBF16, 4);
    Shape same = s;
    same.weights = WeightFormat::kSame;
    const Problem f32 = make_problem(same, Dtype::kF32, 4);
    const LayerWeights& w = p.layers[0];
    const LayerWeights& u = f32.layers[0];
    // Generated an expert at a time and quantized: the codes of the whole f32 layer quantized.
    for (auto [held, floats] :
         {std::pair{&w.q1, &u.w1}, std::pair{&w.q3, &u.w3}, std::pair{&w.q2, &u.w2},
          std::pair{&w.qs1, &u.ws1}, std::pair{&w.qs2, &u.ws2}}) {
      std::vector<float> copy = *floats;
      const QuantMatrix whole = quantize(format, copy.data(), held->rows, held->cols);
      CHECK(held->codes == whole.codes);
      CHECK(held->scales == whole.scales);
    }
    for (const auto* v : {&w.w1, &w.w3, &w.w2, &w.ws1, &w.ws3, &w.ws2}) CHECK(v->empty());
    // Rows as the oracle and naive read them: dequantized codes, or the twin's f32 values.
    const Problem twin = unquantized_twin(p);
    CHECK(twin.x == p.x);
    CHECK(twin.layers[0].wg == w.wg);
    CHECK(twin.layers[0].w1.empty());
    CHECK(twin.layers[0].q1.empty());
    for (int64_t e : {int64_t{0}, int64_t{3}, int64_t{-1}}) {
      for (ExpertMatrix m : {ExpertMatrix::kW1, ExpertMatrix::kW3, ExpertMatrix::kW2}) {
        const MatrixRows quant(p, 0, m, e), gen(twin, 0, m, e), held(f32, 0, m, e);
        REQUIRE(quant.rows() == held.rows());
        REQUIRE(gen.cols() == held.cols());
        const QuantMatrix& q = w.codes(m, e < 0);
        std::vector<float> a, b, c, expect(static_cast<size_t>(held.rows() * held.cols()));
        dequantize_rows(format, q, std::max<int64_t>(e, 0) * held.rows(), held.rows(),
                        expect.data());
        const float* all_q = quant.all(a);
        CHECK(std::equal(expect.begin(), expect.end(), all_q));
        const float* all_gen = gen.all(b);
        const float* all_f32 = held.all(c);
        CHECK(std::equal(all_f32, all_f32 + expect.size(), all_gen));
        std::vector<float> row(static_cast<size_t>(held.cols()));
        const int64_t r = held.rows() - 1;
        CHECK(std::equal(all_f32 + r * held.cols(), all_f32 + (r + 1) * held.cols(),
                         gen.row(r, row.data())));
        CHECK(std::equal(expect.end() - held.cols(), expect.end(), quant.row(r, row.data())));
      }
    }
  }
}

TEST_CASE("a quantized problem's fingerprint is that of its dequantized values held as floats") {
  Shape s = make_shape(4, 2, 64, 32, 3);
  s.weights = WeightFormat::kQ4;
  const Problem p = make_problem(s, Dtype::kF32, 9);
  Problem floats = p;
  LayerWeights& w = floats.layers[0];
  const auto as_floats = [](const QuantMatrix& q, std::vector<float>& out) {
    out.resize(static_cast<size_t>(q.rows * q.cols));
    dequantize_rows(WeightFormat::kQ4, q, 0, q.rows, out.data());
  };
  as_floats(w.q1, w.w1);
  as_floats(w.q3, w.w3);
  as_floats(w.q2, w.w2);
  w.q1 = w.q3 = w.q2 = QuantMatrix{};
  CHECK(fingerprint(floats) == fingerprint(p));
  w.w2[4] += 1;  // a sampled element (every second one of 8192)
  CHECK(fingerprint(floats) != fingerprint(p));
}

// Shapes the quantized kernels must get right: several panels and chunks (d above kUpChunk's
// 512 and f above kDownChunk's 512 need multiples of 32 for q4), shared experts, GELU, and a
// width that does not fill the last panel.
std::vector<NamedShape> quant_shapes() {
  std::vector<NamedShape> out;
  out.push_back({"small", make_shape(4, 2, 64, 96, 5)});
  out.push_back({"chunks", make_shape(4, 2, 544, 576, 3)});
  Shape shared = make_shape(8, 2, 96, 64, 17);
  shared.shared_experts = 2;
  shared.d_ff_shared = 32;
  out.push_back({"shared experts, 17 tokens", shared});
  Shape gelu = make_shape(4, 1, 64, 160, 4);
  gelu.activation = Activation::kGelu;
  out.push_back({"gelu", gelu});
  return out;
}

TEST_CASE("every implementation that takes quantized weights matches the oracle, under every cap") {
  const auto before = max_isa();
  for (Isa cap : supported_isas()) {
    set_max_isa(cap);
    for (WeightFormat format : {WeightFormat::kInt8, WeightFormat::kQ4}) {
      for (Dtype dtype : {Dtype::kF32, Dtype::kBF16}) {
        for (NamedShape ns : quant_shapes()) {
          ns.shape.weights = format;
          const Problem p = make_problem(ns.shape, dtype, 6);
          const Oracle oracle(p);
          const Problem twin = unquantized_twin(p);
          const Oracle unquantized(twin);
          int ran = 0;
          for (const auto& entry : registry()) {
            auto kernel = entry.make();
            if (kernel->self_timed() || kernel->unavailable_reason()) continue;
            if (kernel->refuses(p.shape, dtype)) continue;
            INFO(ns.name << " | " << to_string(format) << " | " << to_string(dtype) << " | "
                         << entry.name << " | cap " << to_string(cap));
            omp_set_num_threads(2);
            kernel->prepare(p, 2);
            kernel->run(0);
            const Correctness c = oracle.check(kernel->output(), kernel->selected_experts(), 0,
                                               kernel->quantizes_activations());
            CHECK(c.pass);
            CHECK(c.selection_mismatches == 0);
            // Against the unquantized layer the error is the quantization's, far above the
            // arithmetic's: q4 several times int8's.
            const Correctness q = unquantized.check(kernel->output(), kernel->selected_experts());
            CHECK(q.nmse > c.nmse);
            CHECK(q.nmse < (format == WeightFormat::kInt8 ? 1e-3 : 3e-2));
            ++ran;
          }
          CHECK(ran >= 3);  // naive, blas and cpu at least
        }
      }
    }
  }
  set_max_isa(before);
}

TEST_CASE("the bf16-only kernels and the Python peers refuse quantized weights with the reason") {
  Shape s = make_shape(4, 2, 64, 32, 2);
  s.weights = WeightFormat::kInt8;
  for (const char* name : {"cpu_avx512_bf16", "cpu_amx", "numpy"}) {
    auto kernel = registry().make(name);
    INFO(name);
    CHECK(kernel->refuses(s, Dtype::kBF16).has_value());
  }
  CHECK_FALSE(registry().make("cpu")->refuses(s, Dtype::kBF16).has_value());
}

TEST_CASE("activation rows quantize to int8 by their largest magnitude, ties to even") {
  const std::vector<float> v{127.0f, -127.0f, 0.5f, 1.5f, 2.5f, -3.4f, 63.49f};
  std::vector<int8_t> codes(v.size());
  CHECK(quantize_activations(v.data(), std::ssize(v), codes.data()) == 1.0f);
  CHECK(codes == std::vector<int8_t>{127, -127, 0, 2, 2, -3, 63});
  const std::vector<double> half{-0.5, 0.25, 0.0};
  std::vector<int8_t> c2(3);
  CHECK(quantize_activations(half.data(), 3, c2.data()) == 0.5 / 127);
  CHECK(c2 == std::vector<int8_t>{-127, 64, 0});  // 63.5 rounds to even
  // The same codes as std::nearbyint's on random rows, in float and in double.
  std::vector<float> row(4096);
  fill_normal(row.data(), std::ssize(row), 1.0, 5, 6);
  row[7] = 40.0f;  // scale 40/127: some values land near halves
  std::vector<int8_t> fast(row.size());
  const float s = quantize_activations(row.data(), std::ssize(row), fast.data());
  const std::vector<double> wide(row.begin(), row.end());
  std::vector<int8_t> fast_d(row.size());
  const double sd = quantize_activations(wide.data(), std::ssize(wide), fast_d.data());
  int64_t differ = 0;
  for (size_t i = 0; i < row.size(); ++i) {
    differ += fast[i] != static_cast<int8_t>(std::nearbyint(row[i] / s));
    differ += fast_d[i] != static_cast<int8_t>(std::nearbyint(wide[i] / sd));
  }
  CHECK(differ == 0);
  const std::vector<float> zeros(4, 0.0f);
  std::vector<int8_t> c3(4, 1);
  CHECK(quantize_activations(zeros.data(), 4, c3.data()) == 1.0f);
  CHECK(c3 == std::vector<int8_t>(4, 0));
}

TEST_CASE("bf16 activations held as 15-bit integers: exact within 6 binades of the group's top") {
  // A group whose largest magnitude is 1.9921875 (bf16 255/128): 2^s = 2^-13.
  std::vector<float> v(32);
  for (int i = 0; i < 32; ++i) {
    // bf16 values 2^-i/4 x (1 + j/128) for binades 0..7 below the top, signs alternating.
    const int binade = i % 8;
    const float mantissa = 1.0f + static_cast<float>((37 * i) % 128) / 128.0f;
    v[static_cast<size_t>(i)] = std::ldexp(mantissa, -binade) * (i % 2 == 0 ? 1.0f : -1.0f);
  }
  v[5] = -1.9921875f;
  std::vector<int8_t> hi(32), lo(32);
  int32_t sum = 0;
  const float scale = hold_as_int15(v.data(), 32, hi.data(), lo.data(), sum);
  CHECK(scale == std::ldexp(1.0f, -13));
  int32_t total = 0;
  for (int i = 0; i < 32; ++i) {
    const size_t at = static_cast<size_t>(i);
    INFO("value " << i << ": " << v[at]);
    CHECK(lo[at] >= 0);
    const int32_t c = 128 * hi[at] + lo[at];
    total += c;
    const float held = static_cast<float>(c) * scale;
    if (std::fabs(v[at]) >= std::ldexp(1.0f, -6)) {
      CHECK(held == v[at]);  // bf16's last place no finer than the step: exact (m / 64 and up)
    } else {
      CHECK(std::fabs(held - v[at]) <= scale / 2);  // below: rounded to the step
      CHECK(held != v[at]);  // 7 binades down, a bf16 with its last bit set is not a step
    }
  }
  CHECK(128 * hi[5] + lo[5] == -16320);
  CHECK(total == sum);
  // A group of zeros; a group far below 1 (the two-step scaling) is held as exactly.
  const std::vector<float> zeros(7, 0.0f);
  CHECK(hold_as_int15(zeros.data(), 7, hi.data(), lo.data(), sum) == 1.0f);
  CHECK(sum == 0);
  CHECK((hi[0] == 0 && lo[6] == 0));
  const std::vector<float> tiny{std::ldexp(1.5f, -120), std::ldexp(-1.25f, -122)};
  const float tiny_scale = hold_as_int15(tiny.data(), 2, hi.data(), lo.data(), sum);
  CHECK(static_cast<float>(128 * hi[0] + lo[0]) * tiny_scale == tiny[0]);
  CHECK(static_cast<float>(128 * hi[1] + lo[1]) * tiny_scale == tiny[1]);
}

TEST_CASE("the vector hold of bf16 rows as 15-bit integers gives the plain one's bits") {
  if (!cpu::has_avx512_vnni()) {
    WARN("skipped: this CPU has no AVX-512 VNNI, whose kernels hold the rows with AVX-512");
    return;
  }
  auto* const hold = cpu::a8_vnni_kernels().hold_a16;
  REQUIRE(hold != nullptr);
  for (int64_t len : {32, 100, 1024, 4103}) {
    // f32 values (rounded to bf16 on the way, ties included), groups spanning up to 40 binades,
    // a group of zeros, a tiny group, an infinity.
    std::vector<float> v(static_cast<size_t>(len));
    fill_normal(v.data(), len, 1.0, 7, static_cast<uint64_t>(len));
    for (int64_t i = 0; i < len; ++i) v[i] = std::ldexp(v[i], -static_cast<int>((i * 13) % 41));
    v[3] = 1.00390625f;  // halfway between two bf16 values: to even (down)
    v[4] = 1.01171875f;  // and up
    for (int64_t i = 32; i < std::min<int64_t>(len, 64); ++i) v[i] = 0.0f;
    for (int64_t i = 64; i < std::min<int64_t>(len, 96); ++i) v[i] = std::ldexp(v[i], -110);
    if (len > 1000) v[1000] = std::numeric_limits<float>::infinity();
    const int64_t groups = (len + 31) / 32;
    std::vector<int8_t> hi(len), lo(len), hi2(len), lo2(len);
    std::vector<int32_t> sums(groups), sums2(groups);
    std::vector<float> scales(groups), scales2(groups);
    hold(v.data(), len, hi.data(), lo.data(), sums.data(), scales.data());
    cpu::hold_a16_generic(v.data(), len, hi2.data(), lo2.data(), sums2.data(), scales2.data());
    INFO("length " << len);
    CHECK(hi == hi2);
    CHECK(lo == lo2);
    CHECK(sums == sums2);
    CHECK(scales == scales2);
  }
}

TEST_CASE(
    "cpu runs quantized bf16 layers on integers where the CPU has VNNI, within bf16's bound") {
  // Shapes with partial int8 groups and quads (d 100, f 70), blocks of more than four rows, the
  // shared experts, and GELU; inputs whose groups span 30 binades, so that the smallest values
  // are rounded to their group's step.
  std::vector<NamedShape> shapes = quant_shapes();
  shapes.push_back({"int8 partial groups", make_shape(4, 2, 100, 70, 19)});
  const auto before = max_isa();
  for (Isa cap : supported_isas()) {
    set_max_isa(cap);
    const bool vnni = cpu_features().has("avx512_vnni");
    for (WeightFormat format : {WeightFormat::kInt8, WeightFormat::kQ4}) {
      for (NamedShape ns : shapes) {
        if (format == WeightFormat::kQ4 && ns.shape.d_model % 32 != 0) continue;
        ns.shape.weights = format;
        Problem p = make_problem(ns.shape, Dtype::kBF16, 8);
        for (size_t i = 0; i < p.x.size(); ++i)
          p.x[i] = std::ldexp(p.x[i], -static_cast<int>(i % 31));
        const Oracle oracle(p);
        auto kernel = registry().make("cpu");
        kernel->prepare(p, 2);
        kernel->run(0);
        INFO(ns.name << " | " << to_string(format) << " | cap " << to_string(cap) << " | "
                     << kernel->notes());
        CHECK(kernel->notes().starts_with("avx512_vnni a16 ") == vnni);
        const Correctness c = oracle.check(*kernel);
        CHECK(c.pass);
        CHECK(c.selection_mismatches == 0);
        // f32 activations keep the floating-point kernels.
        kernel->prepare(make_problem(ns.shape, Dtype::kF32, 8), 2);
        CHECK(kernel->notes().find("a16") == std::string::npos);
      }
    }
  }
  set_max_isa(before);
}

// The a8 semantics written out here, apart from the oracle: each token's row quantized in float,
// each expert's hidden row (the shared experts' fused row too) quantized in double.
TEST_CASE("the oracle's int8-activation reference is the layer with both quantizations") {
  Shape s = make_shape(8, 2, 64, 96, 5);
  s.shared_experts = 2;
  s.d_ff_shared = 32;
  s.weights = WeightFormat::kInt8;
  const Problem p = make_problem(s, Dtype::kF32, 21);
  const Oracle oracle(p);
  const auto& r = oracle.routing();
  const int64_t d = s.d_model, k = s.top_k;
  std::vector<float> y(static_cast<size_t>(s.tokens * d), 0.0f);
  std::vector<float> buf;
  std::vector<int8_t> codes(static_cast<size_t>(std::max(d, s.d_ff + s.shared_width())));
  const auto ffn = [&](int64_t e, int64_t t, double weight, std::vector<double>& out) {
    const MatrixRows w1(p, 0, ExpertMatrix::kW1, e), w3(p, 0, ExpertMatrix::kW3, e),
        w2(p, 0, ExpertMatrix::kW2, e);
    const double sx = quantize_activations(p.x.data() + t * d, d, codes.data());
    std::vector<double> h(static_cast<size_t>(w1.rows()));
    for (int64_t j = 0; j < w1.rows(); ++j) {
      std::vector<float> b1(static_cast<size_t>(d)), b3(b1.size());
      const float* r1 = w1.row(j, b1.data());
      const float* r3 = w3.row(j, b3.data());
      double g = 0, u = 0;
      for (int64_t i = 0; i < d; ++i) {
        g += double{r1[i]} * (codes[i] * sx);
        u += double{r3[i]} * (codes[i] * sx);
      }
      h[j] = g / (1 + std::exp(-g)) * u;
    }
    const double sh = quantize_activations(h.data(), std::ssize(h), codes.data());
    for (int64_t c = 0; c < d; ++c) {
      std::vector<float> b2(static_cast<size_t>(w2.cols()));
      const float* r2 = w2.row(c, b2.data());
      double acc = 0;
      for (int64_t j = 0; j < w2.cols(); ++j) acc += double{r2[j]} * (codes[j] * sh);
      out[c] += weight * acc;
    }
  };
  for (int64_t t = 0; t < s.tokens; ++t) {
    std::vector<double> out(static_cast<size_t>(d), 0.0);
    for (int64_t j = 0; j < k; ++j) {
      if (r.kept[t * k + j]) ffn(r.expert[t * k + j], t, r.weight[t * k + j], out);
    }
    ffn(-1, t, 1.0, out);
    for (int64_t c = 0; c < d; ++c) y[t * d + c] = static_cast<float>(out[c]);
  }
  std::vector<int32_t> selected(r.expert.begin(), r.expert.end());
  const Correctness a8 = oracle.check(y, selected, 0, true);
  CHECK(a8.max_rel_err < 1e-6);  // the float outputs' rounding
  CHECK(a8.tolerance == tolerance_for_a8(Dtype::kF32));
  // Against the layer without them: the quantizations' own error, far above.
  CHECK(oracle.check(y, selected).max_rel_err > 1e-3);
}

TEST_CASE("cpu_w8a8 runs quantized weights with int8 activations, on every cap, any thread count") {
  auto kernel = registry().make("cpu_w8a8");
  REQUIRE(kernel->quantizes_activations());
  Shape s = make_shape(8, 2, 64, 96, 5);
  CHECK(kernel->refuses(s, Dtype::kF32).has_value());  // weights in the dtype: not its format
  const auto before = max_isa();
  // The AVX2 kernels' outputs, by shape and format: the VNNI kernels add the same integers (their
  // int8 weights unsigned, the offset taken off) and scale them alike, so they give the same bits.
  std::map<std::string, std::vector<float>> avx2_outputs;
  for (Isa cap : supported_isas()) {
    set_max_isa(cap);
    const char* expected = cap == Isa::kGeneric                ? "generic a8"
                           : cpu_features().has("avx512_vnni") ? "avx512_vnni a8"
                                                               : "avx2 a8";
    for (WeightFormat format : {WeightFormat::kInt8, WeightFormat::kQ4}) {
      for (NamedShape ns : quant_shapes()) {
        ns.shape.weights = format;
        const Problem p = make_problem(ns.shape, Dtype::kF32, 8);
        const Oracle oracle(p);
        INFO(ns.name << " | " << to_string(format) << " | cap " << to_string(cap));
        const std::string key = ns.name + std::string(to_string(format));
        std::vector<float> first;
        for (int threads : {1, 2}) {
          omp_set_num_threads(threads);
          kernel->prepare(p, threads);
          kernel->run(0);
          const std::string notes = kernel->notes();
          INFO(notes);
          CHECK(notes.starts_with(expected));
          if (std::string_view(expected) == "avx2 a8") {
            avx2_outputs[key].assign(kernel->output().begin(), kernel->output().end());
          } else if (std::string_view(expected) == "avx512_vnni a8") {
            REQUIRE(avx2_outputs.contains(key));
            CHECK(std::equal(avx2_outputs[key].begin(), avx2_outputs[key].end(),
                             kernel->output().begin(), kernel->output().end()));
          }
          const Correctness c = oracle.check(kernel->output(), kernel->selected_experts(), 0, true);
          CHECK(c.pass);
          // The integer sums do not depend on how the work is split.
          if (first.empty()) {
            first.assign(kernel->output().begin(), kernel->output().end());
          } else {
            CHECK(std::equal(first.begin(), first.end(), kernel->output().begin()));
          }
          // Checked as a weight-only kernel it would fail: what it computes is the a8 layer.
          CHECK(oracle.check(kernel->output(), kernel->selected_experts()).max_rel_err >
                10 * c.max_rel_err);
        }
      }
    }
  }
  set_max_isa(before);
}

// With q4 weights in bf16: cpu_w8a8, cpu (on the pair kernels where this CPU has them and
// vdpbf16ps keeps up, else FP32), and cpu_avx512_bf16 (the pair kernels) where it can run.
TEST_CASE("route and run_routed give run's output with q4 weights, on the experts a rank holds") {
  Shape s = make_shape(8, 2, 64, 96, 12);
  s.weights = WeightFormat::kQ4;
  const Problem p = make_problem(s, Dtype::kBF16, 4);
  for (const char* name : {"cpu_w8a8", "cpu", "cpu_avx512_bf16"}) {
    auto whole = registry().make(name);
    if (whole->unavailable_reason()) continue;
    INFO(name);
    whole->prepare(p, 2);
    whole->run(0);
    const int64_t T = s.tokens, k = s.top_k, d = s.d_model;
    std::vector<int32_t> expert(static_cast<size_t>(T * k));
    std::vector<float> weight(expert.size());
    whole->route(0, T, expert, weight);
    std::vector<uint8_t> held(static_cast<size_t>(s.experts), 0), kept(expert.size(), 0);
    for (size_t e = 0; e < held.size(); e += 2) held[e] = 1;
    for (size_t i = 0; i < expert.size(); ++i) kept[i] = held[static_cast<size_t>(expert[i])];
    const std::vector<uint8_t> every_row(static_cast<size_t>(T), 1);
    std::vector<float> y_whole(static_cast<size_t>(T * d)), y_held(y_whole.size());
    whole->run_routed(0, RoutedRows{p.x, T, k, expert, weight, kept, every_row}, y_whole);
    auto part = registry().make(name);
    part->hold_experts(held);
    part->prepare(p, 2);
    part->run_routed(0, RoutedRows{p.x, T, k, expert, weight, kept, every_row}, y_held);
    CHECK(y_held == y_whole);
    const std::vector<uint8_t> all(expert.size(), 1);
    whole->run_routed(0, RoutedRows{p.x, T, k, expert, weight, all, every_row}, y_whole);
    std::vector<float> rounded = y_whole;
    for (float& v : rounded) v = round_to(Dtype::kBF16, v);
    CHECK(std::equal(rounded.begin(), rounded.end(), whole->output().begin()));
  }
}
