#include "moe_bench/problem.hpp"

#include <omp.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <utility>
#include <vector>

#include "moe_bench/correctness.hpp"
#include "moe_bench/grid.hpp"

using namespace moe_bench;

TEST_CASE("generated data depends on the seed, not on the thread count") {
  Shape s;
  s.tokens = 3;
  s.d_ff = 256;
  omp_set_num_threads(1);
  Problem a = make_problem(s, Dtype::kF32, 11);
  omp_set_num_threads(2);
  Problem b = make_problem(s, Dtype::kF32, 11);
  Problem c = make_problem(s, Dtype::kF32, 12);
  CHECK(a.x == b.x);
  CHECK(a.layers[0].w2 == b.layers[0].w2);
  CHECK(a.x != c.x);
}

TEST_CASE("generated weights have the stated distribution") {
  std::vector<float> v(200000);
  fill_normal(v.data(), static_cast<int64_t>(v.size()), 0.5, 1, 2);
  double sum = 0, sq = 0;
  for (float x : v) {
    sum += x;
    sq += double(x) * x;
  }
  const auto n = static_cast<double>(v.size());
  const double mean = sum / n, var = sq / n - mean * mean;
  CHECK(std::fabs(mean) < 0.005);
  CHECK(std::sqrt(var) == Approx(0.5).epsilon(0.01));
  // The shape, not only the moments: the shares within 1, 2 and 3 sigma are the normal's (each
  // within 5 standard errors of a binomial share at this n), and the tail stops at 5.77 sigma.
  for (const auto& [k, share] : {std::pair{1.0, 0.682689}, {2.0, 0.954500}, {3.0, 0.997300}}) {
    const double inside =
        static_cast<double>(
            std::count_if(v.begin(), v.end(), [k](float x) { return std::fabs(x) < 0.5 * k; })) /
        n;
    INFO(k << " sigma");
    CHECK(std::fabs(inside - share) < 5 * std::sqrt(share * (1 - share) / n));
  }
  float largest = 0;
  for (float x : v) largest = std::max(largest, std::fabs(x));
  CHECK(largest <= 0.5f * 5.78f);
}

TEST_CASE("generated data is the same bits on every machine, and an odd length is a prefix") {
  // FP32 arithmetic without library calls or contraction: these values hold on every x86-64 CPU
  // and compiler flags (the first five of seed 42, stream 7).
  std::vector<float> v(5);
  fill_normal(v.data(), 5, 1.0, 42, 7);
  CHECK(v == std::vector<float>{-0x1.5b8aep+0f, -0x1.b70596p-5f, 0x1.0446fcp-1f, 0x1.a5b95ap-1f,
                                0x1.983e34p+0f});
  std::vector<float> w(6);
  fill_normal(w.data(), 6, 1.0, 42, 7);
  CHECK(std::equal(v.begin(), v.end(), w.begin()));
}

TEST_CASE("a range of the generator's values is the same values as the whole, from any element") {
  // 20000 values: past the length where filling goes parallel.
  std::vector<float> whole(20000);
  fill_normal(whole.data(), 20000, 0.3, 5, 11);
  for (auto [first, n] : {std::pair<int64_t, int64_t>{0, 1},
                          {1, 1},
                          {3, 4},
                          {7, 5},
                          {2, 9},
                          {9999, 10001},
                          {10, 19990}}) {
    INFO(first << " + " << n);
    std::vector<float> part(static_cast<size_t>(n));
    fill_normal(part.data(), n, 0.3, 5, 11, first);
    CHECK(std::equal(part.begin(), part.end(), whole.begin() + first));
  }
}

TEST_CASE("routing skew makes popularity follow the chosen distribution") {
  Shape s;
  s.experts = 8;
  s.top_k = 1;
  s.d_model = 256;
  s.d_ff = 8;
  s.tokens = 4000;
  s.skew = parse_skew("zipf:1.5");
  Load zipf = Oracle(make_problem(s, Dtype::kF32, 3), 0, 1e6).load();
  CHECK(zipf.tokens_per_expert[0] > zipf.tokens_per_expert[3]);
  CHECK(zipf.tokens_per_expert[3] > zipf.tokens_per_expert[7]);
  CHECK(zipf.imbalance > 2.0);
  // zipf:1.5 over 8 experts gives expert 0 a share of 1 / sum_r r^-1.5 = 0.518.
  CHECK(static_cast<double>(zipf.tokens_per_expert[0]) / static_cast<double>(s.tokens) ==
        Approx(0.518).margin(0.05));
  s.skew = parse_skew("hot:0.6");
  Load hot = Oracle(make_problem(s, Dtype::kF32, 3), 0, 1e6).load();
  const double share =
      static_cast<double>(hot.tokens_per_expert[0]) / static_cast<double>(s.tokens);
  CHECK(share == Approx(0.6).margin(0.05));
  s.skew = {};
  Load uniform = Oracle(make_problem(s, Dtype::kF32, 3), 0, 1e6).load();
  CHECK(uniform.imbalance < 1.2);
  // A balanced router gives an auxiliary loss close to 1.
  CHECK(uniform.aux_loss == Approx(1.0).epsilon(0.1));
}

TEST_CASE("cold-cache layers are separate copies of the first layer") {
  const Shape s = make_shape(4, 2, 16, 8, 2);
  const Problem p = make_problem(s, Dtype::kBF16, 5, 3);
  REQUIRE(p.layers.size() == 3);
  CHECK(make_problem(s, Dtype::kBF16, 5, 1).layers[0].w1 == p.layers[0].w1);
  for (size_t l = 1; l < p.layers.size(); ++l) {
    CHECK(p.layers[l].w1 == p.layers[0].w1);
    CHECK(p.layers[l].w2 == p.layers[0].w2);
    CHECK(p.layers[l].w1.data() != p.layers[0].w1.data());
  }
}
