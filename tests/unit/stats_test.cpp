#include <catch2/catch.hpp>
#include <vector>

#include "moe_bench/stats.hpp"

using namespace moe_bench;

TEST_CASE("summary statistics of hand-checkable samples") {
  std::vector<double> v{4, 1, 3, 2};
  Stats s = summarize(v);
  CHECK(s.n == 4);
  CHECK(s.median_s == 2.5);
  CHECK(s.mean_s == 2.5);
  CHECK(s.min_s == 1);
  CHECK(s.max_s == 4);
  // Sample variance: (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3.
  CHECK(s.stddev_s == Approx(std::sqrt(5.0 / 3.0)));
  CHECK(median(std::vector<double>{5, 1, 9}) == 5);
}

TEST_CASE("stddev is 0 for one sample and everything is 0 for none") {
  Stats one = summarize(std::vector<double>{3.0});
  CHECK(one.stddev_s == 0);
  CHECK(one.median_s == 3.0);
  Stats none = summarize(std::vector<double>{});
  CHECK(none.n == 0);
  CHECK(none.median_s == 0);
}
