// The CUDA kernels' routing and permutation arithmetic (lib/kernels/cuda/moe_index.hpp), run on
// the CPU against the reference semantics: these are the same functions the device executes.
#include <algorithm>
#include <catch2/catch.hpp>
#include <random>
#include <vector>

#include "lib/kernels/cuda/host_pack.hpp"
#include "lib/kernels/cuda/moe_index.hpp"
#include "moe_bench/correctness.hpp"
#include "moe_bench/grid.hpp"
#include "moe_bench/problem.hpp"
#include "moe_bench/routing.hpp"

using namespace moe_bench;
namespace mc = moe_bench::cuda;

namespace {

mc::DevRouting to_dev(const RoutingConfig& r) {
  mc::DevRouting d;
  d.scoring = r.scoring == Scoring::kSoftmax ? 0 : r.scoring == Scoring::kSigmoid ? 1 : 2;
  d.renormalize = r.renormalize;
  d.scale = static_cast<float>(r.scale);
  d.selection_bias = r.selection_bias;
  d.groups = static_cast<int>(r.groups);
  d.topk_groups = static_cast<int>(r.topk_groups);
  return d;
}

// The permutation as the device builds it, one group after another.
struct Permutation {
  std::vector<int64_t> kept, offsets, inv;
  std::vector<int32_t> row_token;
  std::vector<float> row_weight;
  int groups = 0;
};

Permutation permute(const std::vector<int32_t>& expert, const std::vector<float>& weight,
                    int experts, int top_k, int64_t capacity, int64_t shared_rows, int64_t tile) {
  Permutation p;
  const auto n = static_cast<int64_t>(expert.size());
  p.kept.resize(static_cast<size_t>(experts));
  p.offsets.assign(static_cast<size_t>(experts + 2), -7);
  const int64_t rows = mc::max_rows(n, experts, shared_rows, tile);
  p.row_token.assign(static_cast<size_t>(rows), -7);
  p.row_weight.assign(static_cast<size_t>(rows), -7.0f);
  p.inv.assign(static_cast<size_t>(n), -7);
  for (int g = 0; g < experts; ++g) p.kept[g] = mc::kept_rows(expert.data(), n, g, capacity);
  p.groups = mc::scan_offsets(p.kept.data(), experts, shared_rows, tile, p.offsets.data());
  for (int g = 0; g < experts; ++g) {
    mc::place_group(g, expert.data(), weight.data(), n, top_k, capacity, p.offsets.data(),
                    p.row_token.data(), p.row_weight.data(), p.inv.data());
  }
  if (shared_rows > 0) {
    mc::place_shared(shared_rows, p.offsets.data(), experts, p.row_token.data(),
                     p.row_weight.data());
  }
  return p;
}

}  // namespace

TEST_CASE("the device routing function chooses and weighs as the reference does") {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  int checked = 0;
  for (const NamedShape& ns : consistency_grid()) {
    const Shape& s = ns.shape;
    const auto E = static_cast<int>(s.experts), k = static_cast<int>(s.top_k);
    const mc::DevRouting dev = to_dev(s.routing);
    std::vector<float> logits(static_cast<size_t>(E)), bias(static_cast<size_t>(E));
    for (float& b : bias) b = 0.1f * normal(rng);
    std::vector<float> scratch(static_cast<size_t>(3 * E + 2 * (dev.groups + 1)));
    mc::RouteScratch rs{scratch.data(), scratch.data() + E,
                        reinterpret_cast<unsigned char*>(scratch.data() + 2 * E),
                        scratch.data() + 3 * E,
                        reinterpret_cast<unsigned char*>(scratch.data() + 3 * E + dev.groups + 1)};
    std::vector<float> ref_scratch(static_cast<size_t>(2 * E));
    for (int trial = 0; trial < 200; ++trial) {
      for (float& l : logits) l = normal(rng);
      std::vector<int32_t> ref_e(static_cast<size_t>(k)), dev_e(static_cast<size_t>(k));
      std::vector<float> ref_w(static_cast<size_t>(k)), dev_w(static_cast<size_t>(k));
      route_token(s.routing, logits.data(), bias.data(), E, k, ref_e.data(), ref_w.data(),
                  ref_scratch.data());
      mc::route_one(dev, logits.data(), bias.data(), E, k, dev_e.data(), dev_w.data(), rs);
      INFO(ns.name << " trial " << trial);
      REQUIRE(dev_e == ref_e);
      for (int j = 0; j < k; ++j) CHECK(dev_w[j] == Approx(ref_w[j]).epsilon(1e-6));
      ++checked;
    }
  }
  CHECK(checked == 200 * static_cast<int>(consistency_grid().size()));
}

TEST_CASE("the permutation keeps each expert's rows contiguous, in order, padded to the tile") {
  std::mt19937 rng(11);
  for (int64_t tile : {1, 16, 64}) {
    for (double capacity_factor : {0.0, 0.3, 1.0, 4.0}) {
      for (int64_t shared_rows : {0, 37}) {
        const int experts = 9, top_k = 3;
        const int64_t tokens = 37, n = tokens * top_k;
        Shape s;
        s.experts = experts;
        s.top_k = top_k;
        s.tokens = tokens;
        s.capacity_factor = capacity_factor;
        const int64_t capacity = expert_capacity(s);  // -1 when dropless
        // Skewed choices, distinct within a token; expert 8 is never chosen (an empty group).
        std::vector<int32_t> expert(static_cast<size_t>(n));
        std::vector<float> weight(static_cast<size_t>(n));
        std::discrete_distribution<int> pick({8, 4, 2, 1, 1, 1, 1, 1, 0});
        for (int64_t t = 0; t < tokens; ++t) {
          for (int j = 0; j < top_k; ++j) {
            int e = 0;
            do {
              e = pick(rng);
            } while (std::find(expert.begin() + t * top_k, expert.begin() + t * top_k + j, e) !=
                     expert.begin() + t * top_k + j);
            expert[t * top_k + j] = e;
            weight[t * top_k + j] = static_cast<float>(t * top_k + j) + 0.5f;
          }
        }
        INFO("tile " << tile << ", capacity " << capacity << ", shared " << shared_rows);
        const Permutation p = permute(expert, weight, experts, top_k, capacity, shared_rows, tile);
        CHECK(p.groups == experts + (shared_rows > 0 ? 1 : 0));
        CHECK(p.offsets[p.groups] <= mc::max_rows(n, experts, shared_rows, tile));

        // What capacity keeps, by the reference (apply_capacity).
        Routing ref;
        ref.resize(tokens, top_k);
        ref.expert = expert;
        apply_capacity(s, ref);
        std::vector<int64_t> used(static_cast<size_t>(experts), 0);
        for (int64_t i = 0; i < n; ++i) {
          CHECK((p.inv[i] >= 0) == (ref.kept[i] != 0));
          used[expert[i]] += ref.kept[i];
        }
        if (capacity_factor == 0.3) CHECK(ref.dropped > 0);
        for (int g = 0; g < p.groups; ++g) {
          CHECK(p.offsets[g] % tile == 0);
          CHECK(p.offsets[g + 1] >= p.offsets[g]);
        }
        for (int g = 0; g < experts; ++g) {
          CHECK(p.kept[g] == used[g]);
          CHECK(p.offsets[g + 1] - p.offsets[g] == mc::round_up(used[g], tile));
          // Rows of g: its kept assignments in flat order, then padding.
          int64_t row = p.offsets[g];
          for (int64_t i = 0; i < n; ++i) {
            if (expert[i] != g || p.inv[i] < 0) continue;
            CHECK(p.inv[i] == row);
            CHECK(p.row_token[row] == i / top_k);
            CHECK(p.row_weight[row] == weight[i]);
            ++row;
          }
          for (; row < p.offsets[g + 1]; ++row) {
            CHECK(p.row_token[row] == -1);
            CHECK(p.row_weight[row] == 0.0f);
          }
        }
        if (shared_rows > 0) {
          for (int64_t t = 0; t < shared_rows; ++t) {
            CHECK(p.row_token[p.offsets[experts] + t] == t);
            CHECK(p.row_weight[p.offsets[experts] + t] == 1.0f);
          }
        }
        // Every row belongs to the group whose range holds it; rows past the end to none.
        for (int64_t row = 0; row < p.offsets[p.groups] + tile; ++row) {
          const int g = mc::group_of_row(p.offsets.data(), p.groups, row);
          if (row >= p.offsets[p.groups]) {
            CHECK(g == p.groups);
          } else {
            CHECK(p.offsets[g] <= row);
            CHECK(row < p.offsets[g + 1]);
          }
        }
      }
    }
  }
}

TEST_CASE("padding arithmetic") {
  CHECK(mc::round_up(0, 16) == 0);
  CHECK(mc::round_up(1, 16) == 16);
  CHECK(mc::round_up(32, 16) == 32);
  CHECK(mc::round_up(33, 1) == 33);
  // 10 assignments over 4 experts, 16-row tiles: at most 16 + 4 * 16 rows; with 5 shared: + 16.
  CHECK(mc::max_rows(10, 4, 0, 16) == 80);
  CHECK(mc::max_rows(10, 4, 5, 16) == 96);
}

TEST_CASE("the packed gate/up layout and the epilogue's column mapping pair gate with up") {
  constexpr int64_t kTile = 64;  // the grouped GEMM's column tile
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  for (bool gated : {true, false}) {
    for (int64_t f : {1, 23, 32, 33, 100}) {
      const int64_t d = 5, width_pad = mc::round_up(f, gated ? kTile / 2 : kTile);
      std::vector<float> w1(static_cast<size_t>(f * d)), w3(w1.size()), x(static_cast<size_t>(d));
      for (float& v : w1) v = normal(rng);
      for (float& v : w3) v = normal(rng);
      for (float& v : x) v = normal(rng);
      auto dot = [&](const std::vector<float>& w, int64_t unit) {
        float s = 0;
        for (int64_t i = 0; i < d; ++i) s += w[unit * d + i] * x[i];
        return s;
      };
      // What the GEMM computes: column r of the output is packed row r times x.
      const int64_t rows = mc::packed_up_rows(width_pad, gated);
      REQUIRE(rows % kTile == 0);
      std::vector<float> acc(static_cast<size_t>(rows));
      for (int64_t r = 0; r < rows; ++r) {
        bool is_up = false;
        const int64_t unit = mc::packed_up_unit(r, gated, kTile, &is_up);
        CHECK((!is_up || gated));
        acc[r] = unit < f ? dot(is_up ? w3 : w1, unit) : 0.0f;
      }
      // What the epilogue writes: each hidden column once, from its own gate and up.
      std::vector<int> written(static_cast<size_t>(width_pad), 0);
      for (int64_t tile = 0; tile < rows / kTile; ++tile) {
        for (int64_t j = 0; j < (gated ? kTile / 2 : kTile); ++j) {
          const int64_t col = mc::hidden_column(tile, j, gated, kTile);
          REQUIRE(col < width_pad);
          ++written[col];
          const float g = acc[tile * kTile + j];
          if (col >= f) {
            CHECK(g == 0.0f);
            continue;
          }
          CHECK(g == Approx(dot(w1, col)));
          if (gated) CHECK(acc[tile * kTile + kTile / 2 + j] == Approx(dot(w3, col)));
        }
      }
      for (int n : written) CHECK(n == 1);
    }
  }
}

// The CUDA implementation's dataflow, run on the host with the same helpers: routing per token,
// the padded permutation, the gate/up GEMM over the packed layout with its epilogue, the down GEMM
// with the routing weight, the combine. Only the GEMM arithmetic itself is plain loops here.
TEST_CASE("the CUDA dataflow with its helpers reproduces the oracle on the host") {
  constexpr int64_t kTile = 16, kCols = 64;
  for (const NamedShape& ns : consistency_grid()) {
    const Shape& s = ns.shape;
    INFO(ns.name);
    const Problem p = make_problem(s, Dtype::kF32, 5);
    const Oracle oracle(p);
    const LayerWeights& w = p.layers[0];
    const auto E = static_cast<int>(s.experts), k = static_cast<int>(s.top_k);
    const int64_t T = s.tokens, d = s.d_model, fs = s.shared_width();
    const bool gated = s.activation != Activation::kGelu;
    const int act = s.activation == Activation::kSwiglu ? 0
                    : s.activation == Activation::kGelu ? 1
                                                        : 2;
    // Routing.
    const mc::DevRouting dev = to_dev(s.routing);
    std::vector<int32_t> expert(static_cast<size_t>(T * k));
    std::vector<float> weight(expert.size()), logits(static_cast<size_t>(E));
    std::vector<float> scratch(static_cast<size_t>(3 * E + 2 * (dev.groups + 1)));
    const mc::RouteScratch rs{
        scratch.data(), scratch.data() + E,
        reinterpret_cast<unsigned char*>(scratch.data() + 2 * E), scratch.data() + 3 * E,
        reinterpret_cast<unsigned char*>(scratch.data() + 3 * E + dev.groups + 1)};
    for (int64_t t = 0; t < T; ++t) {
      for (int e = 0; e < E; ++e) {
        float sum = 0;
        for (int64_t i = 0; i < d; ++i) sum += p.x[t * d + i] * w.wg[e * d + i];
        logits[e] = sum + w.logit_bias[e];
      }
      mc::route_one(dev, logits.data(), w.selection_bias.data(), E, k, expert.data() + t * k,
                    weight.data() + t * k, rs);
    }
    // Permutation.
    const Permutation perm =
        permute(expert, weight, E, k, expert_capacity(s), fs > 0 ? T : 0, kTile);
    const int64_t rows = perm.offsets[perm.groups];
    // Gate/up over the packed layout, then the epilogue's mapping, into H [rows, width].
    const int64_t width = std::max(s.d_ff, fs);
    std::vector<float> h(static_cast<size_t>(rows * width), -1.0f);
    for (int64_t row = 0; row < rows; ++row) {
      const int g = mc::group_of_row(perm.offsets.data(), perm.groups, row);
      const bool sh = g >= E;
      const int64_t f = sh ? fs : s.d_ff;
      const float* w1 = sh ? w.ws1.data() : w.w1.data() + g * s.d_ff * d;
      const float* w3 = gated ? (sh ? w.ws3.data() : w.w3.data() + g * s.d_ff * d) : nullptr;
      const int32_t token = perm.row_token[row];
      const int64_t width_pad = mc::round_up(f, gated ? kCols / 2 : kCols);
      const int64_t n = mc::packed_up_rows(width_pad, gated);
      std::vector<float> acc(static_cast<size_t>(n), 0.0f);
      for (int64_t r = 0; r < n && token >= 0; ++r) {
        bool is_up = false;
        const int64_t unit = mc::packed_up_unit(r, gated, kCols, &is_up);
        if (unit >= f) continue;
        const float* src = (is_up ? w3 : w1) + unit * d;
        for (int64_t i = 0; i < d; ++i) acc[r] += src[i] * p.x[token * d + i];
      }
      for (int64_t tile = 0; tile < n / kCols; ++tile) {
        for (int64_t j = 0; j < (gated ? kCols / 2 : kCols); ++j) {
          const int64_t col = mc::hidden_column(tile, j, gated, kCols);
          if (col >= f) continue;
          const float up = gated ? acc[tile * kCols + kCols / 2 + j] : 0.0f;
          h[row * width + col] = mc::activate(act, acc[tile * kCols + j], up);
        }
      }
    }
    // Down projection with the routing weight, then the combine.
    std::vector<float> o(static_cast<size_t>(rows * d), 0.0f);
    for (int64_t row = 0; row < rows; ++row) {
      const int g = mc::group_of_row(perm.offsets.data(), perm.groups, row);
      const bool sh = g >= E;
      const int64_t f = sh ? fs : s.d_ff;
      const float* w2 = sh ? w.ws2.data() : w.w2.data() + g * d * s.d_ff;
      for (int64_t c = 0; c < d; ++c) {
        float sum = 0;
        for (int64_t j = 0; j < f; ++j) sum += h[row * width + j] * w2[c * f + j];
        o[row * d + c] = perm.row_weight[row] * sum;
      }
    }
    std::vector<float> y(static_cast<size_t>(T * d));
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t c = 0; c < d; ++c) {
        y[t * d + c] = mc::combine_element(o.data(), d, perm.inv.data(), perm.offsets.data(), E,
                                           fs > 0, nullptr, k, t, c);
      }
    }
    const Correctness c = oracle.check(y, expert);
    CHECK(c.pass);
    CHECK(c.selection_mismatches == 0);
  }
}

TEST_CASE("the grouped engine's weight packing puts every weight where the kernels read it") {
  const auto same = [](float v) { return v; };
  SECTION("by hand: gated, 32-row blocks shrunk to 4, 3 hidden units padded to 4") {
    const int64_t E = 2, width = 3, width_pad = 4, d = 2, d_pad = 3;
    std::vector<float> w1(E * width * d), w3(w1.size());
    for (int64_t e = 0; e < E; ++e) {
      for (int64_t u = 0; u < width; ++u) {
        for (int64_t i = 0; i < d; ++i) {
          w1[(e * width + u) * d + i] = static_cast<float>(100 * e + 10 * u + i + 1);
          w3[(e * width + u) * d + i] = -static_cast<float>(100 * e + 10 * u + i + 1);
        }
      }
    }
    std::vector<float> up;
    mc::pack_up_weights(w1.data(), w3.data(), E, width, width_pad, d, d_pad, true, 4, same, up);
    REQUIRE(up.size() == static_cast<size_t>(E * 8 * d_pad));
    // Expert 1's rows: W1 units 0, 1; W3 units 0, 1; W1 unit 2, (unit 3: zero); W3 unit 2, zero.
    const std::vector<std::vector<float>> rows = {{101, 102, 0},   {111, 112, 0}, {-101, -102, 0},
                                                  {-111, -112, 0}, {121, 122, 0}, {0, 0, 0},
                                                  {-121, -122, 0}, {0, 0, 0}};
    for (size_t r = 0; r < rows.size(); ++r) {
      INFO("row " << r);
      const auto* row = up.data() + (8 + r) * d_pad;
      CHECK(std::vector<float>(row, row + d_pad) == rows[r]);
    }
    std::vector<float> w2(E * d * width), down;
    for (size_t i = 0; i < w2.size(); ++i) w2[i] = static_cast<float>(i + 1);
    mc::pack_down_weights(w2.data(), E, width, width_pad, d, d_pad, same, down);
    REQUIRE(down.size() == static_cast<size_t>(E * d_pad * width_pad));
    // Expert 1, W2 rows [7 8 9] and [10 11 12], padded to 4 columns and 3 rows.
    const std::vector<float> expert1 = {7, 8, 9, 0, 10, 11, 12, 0, 0, 0, 0, 0};
    CHECK(std::vector<float>(down.begin() + d_pad * width_pad, down.end()) == expert1);
  }
  SECTION("the CUTLASS engine's layout: one block per expert, its W1 rows, then its W3 rows") {
    const int64_t E = 2, width = 3, width_pad = 4, d = 2, d_pad = 3;
    std::vector<float> w1(E * width * d), w3(w1.size());
    for (size_t i = 0; i < w1.size(); ++i) {
      w1[i] = static_cast<float>(i + 1);
      w3[i] = -static_cast<float>(i + 1);
    }
    std::vector<float> up;
    mc::pack_up_weights(w1.data(), w3.data(), E, width, width_pad, d, d_pad, true, 2 * width_pad,
                        same, up);
    REQUIRE(up.size() == static_cast<size_t>(E * 8 * d_pad));
    // Expert 1: W1 units 0..2 and a zero row, then W3 units 0..2 and a zero row.
    const std::vector<float> expert1 = {7,  8,  0, 9,  10,  0, 11,  12,  0, 0, 0, 0,
                                        -7, -8, 0, -9, -10, 0, -11, -12, 0, 0, 0, 0};
    CHECK(std::vector<float>(up.begin() + 8 * d_pad, up.end()) == expert1);
  }
  SECTION("large enough to be packed by several threads, against the one-thread loops") {
    for (bool gated : {true, false}) {
      const int64_t E = 3, width = 50, width_pad = 64, d = 40, d_pad = 48, block = 64;
      std::mt19937 gen(7);
      std::uniform_real_distribution<float> dist(-1, 1);
      std::vector<float> w1(E * width * d), w3(w1.size()), w2(E * d * width);
      for (auto* v : {&w1, &w3, &w2}) {
        for (float& x : *v) x = dist(gen);
      }
      std::vector<float> up, down;
      mc::pack_up_weights(w1.data(), gated ? w3.data() : nullptr, E, width, width_pad, d, d_pad,
                          gated, block, same, up);
      mc::pack_down_weights(w2.data(), E, width, width_pad, d, d_pad, same, down);
      const int64_t rows = mc::packed_up_rows(width_pad, gated);
      std::vector<float> want_up(E * rows * d_pad, 0.0f), want_down(E * d_pad * width_pad, 0.0f);
      for (int64_t e = 0; e < E; ++e) {
        for (int64_t r = 0; r < rows; ++r) {
          bool is_up = false;
          const int64_t unit = mc::packed_up_unit(r, gated, block, &is_up);
          if (unit >= width) continue;
          const float* src = (is_up ? w3 : w1).data() + e * width * d;
          for (int64_t i = 0; i < d; ++i) want_up[(e * rows + r) * d_pad + i] = src[unit * d + i];
        }
        for (int64_t r = 0; r < d; ++r) {
          for (int64_t j = 0; j < width; ++j) {
            want_down[e * d_pad * width_pad + r * width_pad + j] = w2[(e * d + r) * width + j];
          }
        }
      }
      INFO((gated ? "gated" : "GELU"));
      CHECK(up == want_up);
      CHECK(down == want_down);
    }
  }
}
