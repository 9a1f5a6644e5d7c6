// read_floor: the loops read every byte they are given, and the bytes are those cpu's forward
// reads of its weights (the router and the experts its tokens reach).
#include <fmt/format.h>
#include <omp.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstring>
#include <set>
#include <vector>

#include "apps/moe-bench/registry.hpp"
#include "lib/kernels/cpu/cpu_moe.hpp"
#include "moe_bench/problem.hpp"
#include "moe_bench/roofline.hpp"
#include "moe_bench/sysinfo.hpp"

using namespace moe_bench;

TEST_CASE("read_bytes reads every 4-byte word it is given, under every cap, in every pattern") {
  const auto before = max_isa();
  // Words of 1: the sum counts the words read. Odd counts and a start off the vector alignment
  // reach every loop's tail; 3 bytes past the last word are not a word.
  std::vector<uint32_t> ones(200'003, 1u);
  for (Isa cap : supported_isas()) {
    set_max_isa(cap);
    for (ReadPattern pattern :
         {ReadPattern::kInterleaved, ReadPattern::kPrefetched, ReadPattern::kPrefetchedStreams}) {
      for (int64_t words : {0, 1, 7, 64, 1000, 12'345, 200'001}) {
        INFO(to_string(cap) << " | " << to_string(pattern) << " | " << words << " words");
        const char* start = reinterpret_cast<const char*>(ones.data() + 1);
        CHECK(read_bytes(start, 4 * words + 3, pattern) == static_cast<float>(words));
      }
    }
  }
  set_max_isa(before);
}

TEST_CASE("weights_read names the router and the packed bytes of exactly the experts reached") {
  for (WeightFormat weights : {WeightFormat::kSame, WeightFormat::kInt8, WeightFormat::kQ4}) {
    INFO(to_string(weights));
    // 64 tokens, one expert each, over 4 experts: every expert is reached (checked below).
    Shape s = make_shape(4, 1, 64, 32, 64);
    s.weights = weights;
    const Problem p = make_problem(s, Dtype::kF32, 3, 2);
    auto cpu = cpu::make_kernel();
    omp_set_num_threads(2);
    cpu->prepare(p, 2);
    cpu->run(0);
    const auto sel = cpu->selected_experts();
    REQUIRE(std::set<int32_t>(sel.begin(), sel.end()).size() == 4);
    // Per expert: its packed weights, and its scales where the format has them.
    const size_t per = weights == WeightFormat::kSame ? 1 : 2;
    const auto all = cpu::weights_read(*cpu, 0);
    REQUIRE(all.size() == 1 + 4 * per);
    CHECK(all[0].data() == reinterpret_cast<const char*>(p.layers[0].wg.data()));
    CHECK(all[0].size() == 4 * 64 * sizeof(float));
    // The experts' bytes follow each other without gaps or overlaps, equal in size (equal widths).
    for (size_t e = 1; e < 4; ++e) {
      for (size_t j = 0; j < per; ++j) {
        const auto& prev = all[1 + (e - 1) * per + j];
        const auto& next = all[1 + e * per + j];
        CHECK(prev.data() + prev.size() == next.data());
        CHECK(prev.size() == next.size());
        CHECK(next.size() > 0);
      }
    }
    // Another layer is other memory.
    CHECK(cpu::weights_read(*cpu, 1)[1].data() != all[1].data());
    // One token reaches one expert: the router and that expert's bytes alone.
    cpu->run_prefix(0, 1);
    const int32_t e = cpu->selected_experts()[0];
    const auto one = cpu::weights_read(*cpu, 0);
    REQUIRE(one.size() == 1 + per);
    for (size_t j = 0; j < per; ++j) {
      CHECK(one[1 + j].data() == all[1 + static_cast<size_t>(e) * per + j].data());
      CHECK(one[1 + j].size() == all[1 + static_cast<size_t>(e) * per + j].size());
    }
  }
  auto naive = make_kernel("naive");
  CHECK_THROWS_AS(cpu::weights_read(*naive, 0), std::logic_error);
}

TEST_CASE("read_floor returns cpu's output and says how many bytes it reads") {
  Shape s = make_shape(8, 2, 128, 64, 1);
  const Problem p = make_problem(s, Dtype::kBF16, 9, 2);
  auto cpu = make_kernel("cpu");
  auto floor = make_kernel("read_floor");
  omp_set_num_threads(2);
  cpu->prepare(p, 2);
  cpu->run(1);
  floor->prepare(p, 2);
  floor->run(1);
  const auto a = cpu->output(), b = floor->output();
  REQUIRE(a.size() == b.size());
  CHECK(std::equal(a.begin(), a.end(), b.begin()));
  const auto ea = cpu->selected_experts(), eb = floor->selected_experts();
  CHECK(std::equal(ea.begin(), ea.end(), eb.begin(), eb.end()));
  // The router (8 x 128 floats) and two experts of 3 x 128 x 64 bf16 weights.
  const double mb = (8 * 128 * 4 + 2 * 3 * 128 * 64 * 2) * 1e-6;
  INFO(floor->notes());
  CHECK(floor->notes().starts_with(fmt::format("reads {:.2f} MB a forward", mb)));
}
