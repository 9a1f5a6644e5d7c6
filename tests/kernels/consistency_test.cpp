#include <fmt/format.h>
#include <omp.h>

#include <algorithm>
#include <catch2/catch.hpp>

#include "apps/moe-bench/registry.hpp"
#include "lib/kernels/cpu/cpu_select.hpp"
#include "moe_bench/correctness.hpp"
#include "moe_bench/dtype.hpp"
#include "moe_bench/grid.hpp"
#include "moe_bench/kernel.hpp"
#include "moe_bench/problem.hpp"
#include "moe_bench/reference.hpp"
#include "moe_bench/roofline.hpp"
#include "moe_bench/sysinfo.hpp"

using namespace moe_bench;

namespace {
constexpr auto make = make_shape;
}  // namespace

TEST_CASE("every registered implementation matches the FP64 oracle on the consistency grid") {
  const uint64_t seed = GENERATE(1, 7);
  const Dtype dtype = GENERATE(Dtype::kF32, Dtype::kBF16, Dtype::kF16);
  for (const NamedShape& ns : consistency_grid()) {
    Problem p = make_problem(ns.shape, dtype, seed);
    Oracle oracle(p);
    for (const auto& entry : registry()) {
      auto kernel = entry.make();
      // Python peers start a process per call: python_peer_test.cpp checks them on a subset.
      if (kernel->self_timed() || kernel->unavailable_reason()) continue;
      const auto& dtypes = kernel->info().dtypes;
      if (std::find(dtypes.begin(), dtypes.end(), dtype) == dtypes.end()) continue;
      // Quantized weights only (cpu_w8a8): quant_test.cpp checks it in its formats.
      if (std::ranges::count(kernel->info().weights, WeightFormat::kSame) == 0) continue;
      REQUIRE_FALSE(kernel->refuses(p.shape, dtype).has_value());
      for (int threads : {1, 2}) {
        INFO(ns.name << " | seed " << seed << " | " << to_string(dtype) << " | " << entry.name
                     << " | threads " << threads);
        omp_set_num_threads(threads);
        kernel->prepare(p, threads);
        kernel->run(0);
        Correctness c = oracle.check(kernel->output(), kernel->selected_experts());
        CHECK(c.pass);
        CHECK(c.max_rel_err <= c.tolerance);
        CHECK(c.selection_mismatches == 0);
        CHECK(c.tokens_checked == p.shape.tokens);
      }
    }
  }
}

TEST_CASE("the grid cases exercise what their names say") {
  auto grid = consistency_grid();
  auto load_of = [](const Shape& s) { return Oracle(make_problem(s, Dtype::kF32, 1)).load(); };
  for (const auto& ns : grid) {
    Load load = load_of(ns.shape);
    const std::string name = ns.name;
    if (name == "every token to one expert") CHECK(load.tokens_per_expert[0] == ns.shape.tokens);
    if (name == "experts that receive no token") CHECK(load.active_experts < ns.shape.experts);
    if (name == "capacity dropping") CHECK(load.dropped > 0);
  }
}

TEST_CASE("a near tie lets an implementation choose the other expert") {
  // Experts 0 and 1 have identical router rows, so every token ties between them; their FFN
  // weights differ, so the output depends on the choice.
  Shape s = make(4, 1, 16, 8, 6);
  Problem p = make_problem(s, Dtype::kF32, 3);
  auto& w = p.layers[0];
  std::copy_n(w.wg.begin(), s.d_model, w.wg.begin() + s.d_model);
  Oracle oracle(p);
  const auto& r = oracle.routing();
  std::vector<int32_t> selected(r.expert.begin(), r.expert.end());
  // Pick the other expert of the tie wherever the oracle picked 0 (ties go to the lower index).
  int64_t flipped = 0;
  for (auto& e : selected) {
    if (e == 0) {
      e = 1;
      ++flipped;
    }
  }
  std::vector<double> scratch(static_cast<size_t>(s.d_model + s.d_ff)), yd(s.d_model);
  std::vector<float> y(static_cast<size_t>(s.tokens * s.d_model));
  for (int64_t t = 0; t < s.tokens; ++t) {
    std::vector<double> logits(4), weight(1), sc(8);
    reference::router_logits(p, w, t, logits.data());
    route_token_with(s.routing, logits.data(), 4, 1, &selected[t], weight.data(), sc.data());
    uint8_t kept = 1;
    reference::token_output(p, 0, t, &selected[t], weight.data(), &kept, yd.data(), scratch.data());
    for (int64_t i = 0; i < s.d_model; ++i) y[t * s.d_model + i] = static_cast<float>(yd[i]);
  }
  Correctness c = oracle.check(y, selected);
  CHECK(c.near_tie_tokens == (std::count(r.expert.begin(), r.expert.end(), 0) +
                              std::count(r.expert.begin(), r.expert.end(), 1)));
  CHECK(c.near_tie_reselected == flipped);
  CHECK(c.pass);

  SECTION("but a different choice without a tie fails") {
    auto bad = std::vector<int32_t>(r.expert.begin(), r.expert.end());
    auto it = std::find_if(bad.begin(), bad.end(), [](int32_t e) { return e >= 2; });
    REQUIRE(it != bad.end());
    *it = *it == 2 ? 3 : 2;
    Correctness c2 = oracle.check(y, bad);
    CHECK(c2.selection_mismatches >= 1);
    CHECK_FALSE(c2.pass);
  }
}

TEST_CASE("a wrong output fails the check") {
  Problem p = make_problem(make(8, 2, 32, 16, 4), Dtype::kF32, 5);
  Oracle oracle(p);
  auto kernel = make_kernel("naive");
  kernel->prepare(p, 1);
  kernel->run(0);
  std::vector<float> y(kernel->output().begin(), kernel->output().end());
  y[5] += 0.01f;
  Correctness c = oracle.check(y, kernel->selected_experts());
  CHECK_FALSE(c.pass);
  CHECK(c.max_abs_err == Approx(0.01).epsilon(1e-3));
  y[5] = std::numeric_limits<float>::quiet_NaN();
  CHECK_FALSE(oracle.check(y, kernel->selected_experts()).pass);
}

TEST_CASE("on large cases the oracle checks a sample that covers every active expert") {
  Shape s = make(16, 2, 64, 64, 300);
  Problem p = make_problem(s, Dtype::kF32, 9);
  const double per_token = 2.0 * 64 * 2 * 64 * 3;
  Oracle oracle(p, 0, 40 * per_token);
  const auto& sample = oracle.sampled_tokens();
  CHECK(static_cast<int64_t>(sample.size()) < s.tokens);
  CHECK(sample.size() >= 8);
  std::vector<int> covered(16, 0);
  for (int64_t t : sample) {
    for (int j = 0; j < 2; ++j) covered[oracle.routing().expert[t * 2 + j]] = 1;
  }
  Load load = oracle.load();
  for (int e = 0; e < 16; ++e) {
    if (load.tokens_per_expert[e] > 0) CHECK(covered[e] == 1);
  }
  auto kernel = make_kernel("blas");
  kernel->prepare(p, 1);
  kernel->run(0);
  Correctness c = oracle.check(kernel->output(), kernel->selected_experts());
  CHECK(c.pass);
  CHECK(c.tokens_checked == static_cast<int64_t>(sample.size()));
}

TEST_CASE("16-bit dtypes store values the dtype represents and round outputs to it") {
  Shape s = make(4, 2, 16, 8, 3);
  for (Dtype d : {Dtype::kBF16, Dtype::kF16}) {
    Problem p = make_problem(s, d, 2);
    for (float v : p.x) CHECK(round_to(d, v) == v);
    for (float v : p.layers[0].w2) CHECK(round_to(d, v) == v);
    for (const auto& entry : registry()) {
      auto kernel = entry.make();
      if (kernel->self_timed() || kernel->unavailable_reason() || kernel->refuses(s, d)) continue;
      kernel->prepare(p, 1);
      kernel->run(0);
      for (float v : kernel->output()) CHECK(round_to(d, v) == v);
    }
  }
  CHECK(round_to(Dtype::kBF16, 1.0f + 1.0f / 256) == 1.0f);  // ties to even
  CHECK(round_to(Dtype::kBF16, 1.0f + 3.0f / 256) == 1.0f + 4.0f / 256);
  CHECK(round_to(Dtype::kF16, 65504.0f) == 65504.0f);
  CHECK(to_bf16_bits(-2.0f) == 0xc000);
}

TEST_CASE("cpu names the bf16 micro-kernel it chose and why, by the rates measured here",
          "[serial]") {
  auto kernel = make_kernel("cpu");
  const Problem prefill = make_problem(make_shape(4, 2, 64, 32, 64), Dtype::kBF16, 3);  // 32 rows
  kernel->prepare(prefill, 1);
  const std::string notes = kernel->notes();
  INFO(notes);
  if (!cpu_features().has("avx512_bf16")) {
    CHECK(notes.find("vdpbf16ps") == std::string::npos);
    return;
  }
  // Where AMX is usable, its kernels are measured first and taken when faster.
  const double amx = amx_refusal().empty() ? cpu::amx_over_fma_kernel_rate() : 0.0;
  if (amx > 1.0) {
    CHECK(notes.starts_with("amx-bf16 micro-kernel (bf16 pairs, AMX tiles)"));
    CHECK(notes.find("32 rows per expert, AMX kernels measured at") != std::string::npos);
  } else {
    CHECK(notes.find("32 rows per expert, vdpbf16ps measured at") != std::string::npos);
    const bool pairs = notes.starts_with("avx512-bf16 ");
    CHECK(pairs == (dpbf16_over_fma_rate() >= 1.0));
  }
  const Problem decode = make_problem(make_shape(4, 2, 64, 32, 1), Dtype::kBF16, 3);
  kernel->prepare(decode, 1);
  CHECK(kernel->notes().starts_with("avx512-bf16 "));
  CHECK(kernel->notes().find("bound by reading weights") != std::string::npos);
}

TEST_CASE("cpu takes integer kernels for q4 in bf16 with VNNI, else pairs where vdpbf16ps keeps up",
          "[serial]") {
  auto kernel = make_kernel("cpu");
  Shape s = make_shape(4, 2, 64, 32, 1);
  s.weights = WeightFormat::kQ4;
  const Problem bf16 = make_problem(s, Dtype::kBF16, 3);
  const auto before = max_isa();
  for (Isa cap : supported_isas()) {
    set_max_isa(cap);
    kernel->prepare(bf16, 1);
    const std::string notes = kernel->notes();
    INFO(notes << " | cap " << to_string(cap));
    const bool pairs = notes.starts_with("avx512-bf16 ");
    const bool a16 = notes.starts_with("avx512_vnni a16 ");
    if (cpu_features().has("avx512_vnni")) {
      CHECK(a16);
    } else if (!cpu_features().has("avx512_bf16")) {
      CHECK_FALSE((pairs || a16));
    } else {
      const double ratio = dpbf16_over_fma_rate();
      CHECK(pairs == (ratio >= 1.0));
      CHECK(notes.find(fmt::format("vdpbf16ps measured at {:.2f}x the FMA rate here", ratio)) !=
            std::string::npos);
    }
    // f32 activations are never rounded to bf16 or held as integers for them.
    kernel->prepare(make_problem(s, Dtype::kF32, 3), 1);
    CHECK(kernel->notes().find("vdpbf16ps") == std::string::npos);
    CHECK(kernel->notes().find("a16") == std::string::npos);
  }
  set_max_isa(before);
}

TEST_CASE("cpu's route and run_routed give run's output, and a rank's kernel holds its experts") {
  const Shape s = make_shape(8, 2, 64, 48, 12);
  Problem p = make_problem(s, Dtype::kF32, 11);
  auto whole = registry().make("cpu");
  whole->prepare(p, 2);
  whole->run(0);
  const std::vector<float> y_run(whole->output().begin(), whole->output().end());
  const int64_t T = s.tokens, k = s.top_k, d = s.d_model;
  std::vector<int32_t> expert(static_cast<size_t>(T * k));
  std::vector<float> weight(expert.size());
  whole->route(0, T, expert, weight);
  const std::vector<uint8_t> all(expert.size(), 1), every_row(static_cast<size_t>(T), 1);
  std::vector<float> y(static_cast<size_t>(T * d));
  whole->run_routed(0, RoutedRows{p.x, T, k, expert, weight, all, every_row}, y);
  CHECK(y == y_run);  // FP32: nothing to round

  // Even experts held: rows for them alone give what the whole kernel gives on those rows.
  std::vector<uint8_t> held(static_cast<size_t>(s.experts), 0), kept(expert.size(), 0);
  for (size_t e = 0; e < held.size(); e += 2) held[e] = 1;
  for (size_t i = 0; i < expert.size(); ++i) kept[i] = held[static_cast<size_t>(expert[i])];
  REQUIRE(std::count(kept.begin(), kept.end(), uint8_t{0}) > 0);
  REQUIRE(std::count(kept.begin(), kept.end(), uint8_t{1}) > 0);
  std::vector<float> y_whole(y.size()), y_held(y.size());
  whole->run_routed(0, RoutedRows{p.x, T, k, expert, weight, kept, every_row}, y_whole);
  auto part = registry().make("cpu");
  part->hold_experts(held);
  part->prepare(p, 2);
  part->run_routed(0, RoutedRows{p.x, T, k, expert, weight, kept, every_row}, y_held);
  CHECK(y_held == y_whole);
  // A row for an expert it does not hold, or the whole layer: refused, not computed.
  CHECK_THROWS_WITH(part->run_routed(0, RoutedRows{p.x, T, k, expert, weight, all, every_row}, y),
                    Catch::Contains("not held here"));
  CHECK_THROWS_AS(part->run(0), std::logic_error);
  // Prepared again to hold every expert: the whole layer again.
  part->hold_experts({});
  part->prepare(p, 2);
  part->run(0);
  CHECK(std::vector<float>(part->output().begin(), part->output().end()) == y_run);
}

// Under each cap this CPU supports, `cpu` chooses only micro-kernels within the cap and still
// matches the oracle: one machine checks the dispatch of every class below its own.
TEST_CASE("cpu matches the oracle under every ISA cap this CPU supports, within the cap") {
  const auto before = max_isa();
  for (Isa cap : supported_isas()) {
    set_max_isa(cap);
    for (Dtype dtype : {Dtype::kF32, Dtype::kBF16})
      for (const NamedShape& ns : consistency_grid()) {
        Problem p = make_problem(ns.shape, dtype, 5);
        Oracle oracle(p);
        auto kernel = make_kernel("cpu");
        INFO(ns.name << " | " << to_string(dtype) << " | cap " << to_string(cap));
        omp_set_num_threads(2);
        kernel->prepare(p, 2);
        kernel->run(0);
        const std::string notes = kernel->notes();
        INFO(notes);
        const std::string isa = notes.substr(0, notes.find(' '));
        const bool allowed = cap == Isa::kGeneric  ? isa == "generic"
                             : cap == Isa::kAvx2   ? isa == "avx2"
                             : cap == Isa::kAvx512 ? isa == "avx512"
                             : cap == Isa::kAvx512Bf16
                                 ? isa == "avx512" || isa == "avx512-bf16"
                                 : isa == "avx512" || isa == "avx512-bf16" || isa == "amx-bf16";
        CHECK(allowed);
        Correctness c = oracle.check(kernel->output(), kernel->selected_experts());
        CHECK(c.pass);
      }
  }
  set_max_isa(before);
}

// The ceilings are right on every ISA: under each cap the measured FMA peak is at least the rate
// of cpu's own micro-kernel of that ISA on operands in L1 (a peak loop that spills measured half
// of it on an AVX2 CPU). Both are best-of-five rates on the same cores; 10% covers noise.
TEST_CASE("under every cap the FMA peak is at least cpu's micro-kernel in cache", "[serial]") {
  const auto before = max_isa();
  for (Isa cap : supported_isas()) {
    if (cap > Isa::kAvx512) continue;  // bf16 caps run the FP32 kernels of avx512
    set_max_isa(cap);
    INFO("cap " << to_string(cap));
    const std::optional<double> kernel = make_kernel("cpu")->in_cache_gflops(1);
    REQUIRE(kernel.has_value());
    Peaks peak = measure_peaks(1);
    for (int i = 0; i < 2 && peak.fp32_gflops < 0.9 * *kernel; ++i) {
      keep_higher(peak, measure_peaks(1));
    }
    INFO("peak " << peak.fp32_gflops << " GFLOP/s, micro-kernel " << *kernel << " GFLOP/s");
    CHECK(peak.fp32_gflops >= 0.9 * *kernel);
    CHECK(peak.fma_isa == std::string(cap == Isa::kGeneric ? "generic"
                                      : cap == Isa::kAvx2  ? "avx2"
                                                           : "avx512"));
  }
  set_max_isa(before);
}

TEST_CASE("the oracle, an expert at a time, adds exactly what token_output<double> adds") {
  // The oracle holds one expert in f32 at a time (quantized layers and the unquantized twin hold
  // no f32 layer); its sums must be the definition's, bit for bit, on every holder of weights.
  std::vector<NamedShape> shapes = consistency_grid();
  Shape q = make(8, 2, 64, 96, 9);
  q.shared_experts = 1;
  q.d_ff_shared = 32;
  for (WeightFormat f : {WeightFormat::kInt8, WeightFormat::kQ4}) {
    q.weights = f;
    shapes.push_back({"quantized " + std::string(to_string(f)), q});
  }
  for (const NamedShape& ns : shapes) {
    const Problem p = make_problem(ns.shape, Dtype::kBF16, 3);
    std::vector<const Problem*> problems{&p};
    const Problem twin = ns.shape.weights == WeightFormat::kSame ? Problem{} : unquantized_twin(p);
    if (ns.shape.weights != WeightFormat::kSame) problems.push_back(&twin);
    for (const Problem* pp : problems) {
      INFO(ns.name << (pp == &twin ? " (the unquantized twin)" : ""));
      const Oracle oracle(*pp);
      const Shape& s = pp->shape;
      const auto& r = oracle.routing();
      const int64_t d = s.d_model, k = s.top_k;
      std::vector<double> scratch(static_cast<size_t>(d + std::max(s.d_ff, s.shared_width())));
      std::vector<double> y(static_cast<size_t>(d));
      const auto& sample = oracle.sampled_tokens();
      REQUIRE(!sample.empty());
      REQUIRE(oracle.expected().size() == sample.size() * d);
      int64_t differing = 0;
      for (size_t i = 0; i < sample.size(); ++i) {
        const int64_t o = sample[i] * k;
        reference::token_output(*pp, 0, sample[i], r.expert.data() + o, r.weight.data() + o,
                                r.kept.data() + o, y.data(), scratch.data());
        for (int64_t c = 0; c < d; ++c) differing += y[c] != oracle.expected()[i * d + c];
      }
      CHECK(differing == 0);
    }
  }
}
