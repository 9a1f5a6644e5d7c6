#include "moe_bench/harness.hpp"

#include <catch2/catch.hpp>

#include "apps/moe-bench/registry.hpp"
#include "moe_bench/roofline.hpp"

using namespace moe_bench;

TEST_CASE("cold mode rotates enough layers to exceed four times the last-level cache") {
  Case c;  // E8 k2 d1024 f4096 T32: one expert is 48 MiB of FP32 weights
  c.shape.tokens = 1;
  const int64_t llc = int64_t{32} << 20, plenty = int64_t{64} << 30;
  // Two active experts touch ~96 MiB per call: 4 x 32 MiB needs ceil(128 / 96.03) = 2 layers.
  CHECK(cold_layers(c, CacheMode::kCold, 2, llc, plenty) == 2);
  // A 300 MiB cache needs ceil(1200 / 96.03) = 13 layers.
  CHECK(cold_layers(c, CacheMode::kCold, 2, int64_t{300} << 20, plenty) == 13);
  CHECK(cold_layers(c, CacheMode::kWarm, 2, int64_t{300} << 20, plenty) == 1);
  // Memory bounds it: a layer is ~385 MiB, so 1 GiB of available memory allows one.
  CHECK(cold_layers(c, CacheMode::kCold, 2, int64_t{300} << 20, int64_t{1} << 30) == 1);
  // Never one layer when memory allows two, however many bytes one call touches: a call must not
  // re-read what the previous call just read.
  CHECK(cold_layers(c, CacheMode::kCold, 8, int64_t{1} << 20, plenty) == 2);
}

TEST_CASE("a quantized layer counts as its codes, and its copies in their stored bytes") {
  Case c;
  c.shape = make_shape(64, 8, 2048, 1024, 1);  // workload B at one token
  c.shape.weights = WeightFormat::kQ4;
  const int64_t llc = int64_t{32} << 20, available = int64_t{20} << 30;
  // Eight experts touch ~28.8 MB a call: 4 x 32 MiB asks for 5 layers. A layer is held as its
  // codes and scales, ~0.45 GB, and cpu's packed q4 copy is ~0.23 GB: 10 GiB holds all 5. (While
  // a layer was held as ~1.61 GB of floats beside its codes, with an f32 twin, it held 4; counting
  // the twin and cpu's copy at the floats' size for every layer allowed one: 29 MB a round, which
  // the 32 MiB cache held.)
  CHECK(cold_layers(c, CacheMode::kCold, 8, llc, available, 1) == 5);
  // With 1 GiB available, ~0.68 GB a layer: (512 MiB - the oracles' expert and the work space)
  // holds none, and one is the least.
  CHECK(cold_layers(c, CacheMode::kCold, 8, llc, int64_t{1} << 30, 1) == 1);
  // 3 GiB: (1.5 GiB - ~25 MB) / 0.68 GB holds 2.
  CHECK(cold_layers(c, CacheMode::kCold, 8, llc, int64_t{3} << 30, 1) == 2);
  // Unquantized, a layer is 1.61 GB and as much again for cpu's copy: 10 GiB holds 3 of the 7
  // that a 300 MiB cache asks for.
  c.shape.weights = WeightFormat::kSame;
  CHECK(cold_layers(c, CacheMode::kCold, 8, int64_t{300} << 20, available, 1) == 3);
}

TEST_CASE("the roofline bound is the slower of compute and memory") {
  Peaks p{2, 100.0, 10.0, "avx512"};
  // 1 GFLOP takes 10 ms of compute; 0.05 GB takes 5 ms of memory: compute-bound at 10 ms.
  RooflinePoint r = roofline(1e9, 0.05e9, 0.02, p, Dtype::kF32);
  CHECK(r.compute_bound);
  CHECK(r.bound_s == Approx(0.01));
  CHECK(r.percent == Approx(50.0));
  RooflinePoint m = roofline(1e6, 1e9, 0.2, p, Dtype::kF32);
  CHECK_FALSE(m.compute_bound);
  CHECK(m.percent == Approx(50.0));
}

TEST_CASE("bf16 results are held to the BF16 dot-product peak where one was measured") {
  Peaks p{2, 100.0, 10.0, "avx512"};
  // Without a BF16 peak every dtype uses the FP32 one.
  CHECK(roofline(1e9, 0.05e9, 0.02, p, Dtype::kBF16).percent == Approx(50.0));
  p.bf16_gflops = 200.0;
  // 1 GFLOP at 200 GFLOP/s takes 5 ms: still compute-bound (ties go to compute), 25%.
  CHECK(roofline(1e9, 0.05e9, 0.02, p, Dtype::kBF16).percent == Approx(25.0));
  CHECK(roofline(1e9, 0.05e9, 0.02, p, Dtype::kF16).percent == Approx(50.0));
  CHECK(roofline(1e9, 0.05e9, 0.02, p, Dtype::kF32).percent == Approx(50.0));
}

TEST_CASE("interleaved timing gives every implementation its samples and a comparison") {
  Case c;
  c.shape.experts = 4;
  c.shape.d_model = 32;
  c.shape.d_ff = 16;
  c.shape.tokens = 3;
  c.threads = 1;
  HarnessOptions o;
  o.reps = 5;
  o.min_time_s = 0;
  o.min_sample_s = 0;
  o.make = make_kernel;
  Report report;
  report.peaks = {{1, 100.0, 10.0, "avx512"}};
  run_cases({c}, {"naive", "blas"}, o, report);
  REQUIRE(report.results.size() == 2);
  for (const Result& r : report.results) {
    CHECK(r.status == Status::kOk);
    CHECK(r.stats.n == 5);
    CHECK(r.derived.roofline_pct > 0);
    CHECK(r.layers >= 1);
  }
  CHECK_FALSE(report.results[1].stages.empty());
  REQUIRE(report.comparisons.size() == 1);
  CHECK(report.comparisons[0].a == "naive");
  CHECK(report.comparisons[0].b == "blas");
  CHECK(report.comparisons[0].speedup.ratio > 0);
}

TEST_CASE("device results are held to the device's copy bandwidth and BF16 GEMM rate") {
  DevicePeaks d{"test GPU", 2000.0, 500.0};
  // 1 TFLOP at 500 TFLOP/s takes 2 ms; 1 GB at 2000 GB/s takes 0.5 ms: compute-bound in bf16.
  RooflinePoint b = roofline(1e12, 1e9, 0.004, d, Dtype::kBF16);
  CHECK(b.compute_bound);
  CHECK(b.percent == Approx(50.0));
  // f32 has no measured compute ceiling on the device: the bandwidth alone.
  RooflinePoint f = roofline(1e12, 1e9, 0.004, d, Dtype::kF32);
  CHECK_FALSE(f.compute_bound);
  CHECK(f.percent == Approx(12.5));
  CHECK(roofline(1e12, 1e9, 0.004, DevicePeaks{}, Dtype::kBF16).percent == 0.0);
}
