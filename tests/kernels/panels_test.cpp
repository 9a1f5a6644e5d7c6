// The one-row kernels that stream several panels side by side (IsaKernels::gate_up_panels and
// down_panels) against the one-panel kernels they stand in for, on every instruction set this CPU
// runs and every weight storage: the same columns, scales, chunked sums and clipping.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "lib/kernels/cpu/cpu_isa.hpp"
#include "lib/kernels/cpu/cpu_select.hpp"

// Named, not file-wide: the unity build shares one scope between test files, where
// moe_bench::cpu's names would clash with moe_bench's.
namespace panels_test {
using namespace moe_bench;
using namespace moe_bench::cpu;

namespace {

std::vector<const IsaKernels*> isas_here() {
  std::vector<const IsaKernels*> out{&generic_kernels()};
  if (has_avx2()) out.push_back(&avx2_kernels());
  if (has_avx512()) out.push_back(&avx512_kernels());
  return out;
}

// Random panels of `rows` reduction rows and 2L columns each, in storage s, with their scales:
// int8 one f32 per column, q4 one f16 per column and group.
struct Panels {
  std::vector<uint8_t> data;
  std::vector<uint8_t> scales;
  int64_t panel_bytes = 0, scale_bytes = 0;
};

Panels random_panels(Storage s, int panels, int64_t rows, int lanes, std::mt19937& rng) {
  const int64_t cols = 2 * lanes;
  Panels out;
  out.panel_bytes = storage_bytes(s, rows * cols);
  out.data.resize(static_cast<size_t>(out.panel_bytes * panels));
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  auto top16 = [](float v) {
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    return static_cast<uint16_t>(bits >> 16);
  };
  for (size_t i = 0; i < out.data.size(); i += 2) {
    uint16_t h = 0;
    if (s == Storage::kBF16 || s == Storage::kF32) h = top16(value(rng));
    if (s == Storage::kF16) h = static_cast<uint16_t>(0x3000 + rng() % 0x0C00);  // 0.125..1.5
    if (s == Storage::kI8 || s == Storage::kQ4) h = static_cast<uint16_t>(rng());
    std::memcpy(&out.data[i], &h, 2);
  }
  if (s == Storage::kF32) {  // whole floats, not bit noise
    auto* f = reinterpret_cast<float*>(out.data.data());
    for (size_t i = 0; i < out.data.size() / 4; ++i) f[i] = value(rng);
  }
  if (s == Storage::kI8) {
    out.scale_bytes = cols * 4;
    out.scales.resize(static_cast<size_t>(out.scale_bytes * panels));
    auto* f = reinterpret_cast<float*>(out.scales.data());
    for (size_t i = 0; i < out.scales.size() / 4; ++i) f[i] = 0.01f * (1.0f + value(rng));
  }
  if (s == Storage::kQ4) {
    out.scale_bytes = rows / kQ4Rows * cols * 2;
    out.scales.resize(static_cast<size_t>(out.scale_bytes * panels));
    for (size_t i = 0; i < out.scales.size(); i += 2) {
      const auto h = static_cast<uint16_t>(0x2000 + rng() % 0x0800);  // f16 0.008..0.03
      std::memcpy(&out.scales[i], &h, 2);
    }
  }
  return out;
}

// QuantArgs::group_sums of a k-major block src[i * R + r] of len rows and n used rows.
std::vector<float> q4_group_sums(const std::vector<float>& src, int64_t len, int64_t n, int R) {
  std::vector<float> sums(static_cast<size_t>(len / kQ4Rows * R), 0.0f);
  for (int64_t g = 0; g < len / kQ4Rows; ++g) {
    for (int64_t r = 0; r < n; ++r) {
      float x = 0;
      for (int64_t i = g * kQ4Rows; i < (g + 1) * kQ4Rows; ++i) x += src[i * R + r];
      sums[g * R + r] = -8.0f * x;
    }
  }
  return sums;
}

// |a - b| within `rel` of the largest magnitude of `b` (the sums differ in order only).
void check_close(const std::vector<float>& a, const std::vector<float>& b, double rel) {
  double scale = 0;
  for (float v : b) scale = std::max(scale, static_cast<double>(std::fabs(v)));
  REQUIRE(scale > 0);
  for (size_t i = 0; i < a.size(); ++i) {
    INFO("element " << i << ": " << a[i] << " vs " << b[i]);
    CHECK(std::fabs(static_cast<double>(a[i]) - b[i]) <= rel * scale);
  }
}

// Hidden values are rounded to 16-bit storage when written (one ulp apart where the sums'
// order moves a rounding).
double tolerance(Storage s) {
  return s == Storage::kBF16 ? 1e-2 : s == Storage::kF16 ? 2e-3 : 1e-5;
}

}  // namespace

TEST_CASE("panels side by side give what one panel at a time gives, on every ISA and storage") {
  std::mt19937 rng(7);
  for (const IsaKernels* isa : isas_here()) {
    const int L = isa->lanes, R = isa->rows;
    REQUIRE(isa->gate_up_panels != nullptr);
    REQUIRE(isa->down_panels != nullptr);
    for (Storage s : {Storage::kF32, Storage::kBF16, Storage::kF16, Storage::kI8, Storage::kQ4}) {
      for (int64_t n = 1; n <= kMaxPanelRows; ++n)
        for (int panels = 1; panels <= side_by_side_panels(n); ++panels) {
          INFO(isa->name << " | storage " << static_cast<int>(s) << " | " << n << " rows | "
                         << panels << " panels");
          // Gate/up over d rows in two chunks (raw sums carried between them), the last panel's
          // hidden columns clipped at f.
          const int64_t d = 192, chunk = 128, hcols = L;
          const int64_t f = panels * hcols - 3;
          const Panels w = random_panels(s, panels, d, L, rng);
          std::vector<float> xp(static_cast<size_t>(d * R), 0.0f);
          std::uniform_real_distribution<float> value(-1.0f, 1.0f);
          for (int64_t i = 0; i < d * R; ++i) xp[i] = value(rng);
          const std::vector<float> sums = q4_group_sums(xp, d, n, R);
          auto quant = [&](int p, int64_t i0) {
            QuantArgs q;
            if (!w.scales.empty()) {
              q.scales = w.scales.data() + p * w.scale_bytes +
                         (s == Storage::kQ4 ? i0 / kQ4Rows * 2 * L * 2 : 0);
            }
            q.group_sums = sums.data() + i0 / kQ4Rows * R;
            return q;
          };
          const int64_t hp_size = (f + 2 * L) * R;
          std::vector<float> one(hp_size, -7.0f), side(hp_size, -7.0f);
          std::vector<float> acc(static_cast<size_t>(kMaxPanels * R * 2 * L));
          for (int p = 0; p < panels; ++p) {
            for (int64_t i0 = 0; i0 < d; i0 += chunk) {
              const int64_t dc = std::min(chunk, d - i0);
              isa->gate_up(xp.data() + i0 * R,
                           w.data.data() + p * w.panel_bytes + storage_bytes(s, i0 * 2 * L), dc, n,
                           one.data(), p * hcols, f, Act::kSwiglu, i0 == 0 ? nullptr : acc.data(),
                           i0 + dc == d ? nullptr : acc.data(), s, quant(p, i0));
            }
          }
          for (int64_t i0 = 0; i0 < d; i0 += chunk) {
            const int64_t dc = std::min(chunk, d - i0);
            isa->gate_up_panels(xp.data() + i0 * R, w.data.data() + storage_bytes(s, i0 * 2 * L),
                                w.panel_bytes, panels, dc, n, side.data(), 0, hcols, f,
                                Act::kSwiglu, i0 == 0 ? nullptr : acc.data(),
                                i0 + dc == d ? nullptr : acc.data(), s, quant(0, i0),
                                w.scale_bytes);
          }
          check_close(side, one, tolerance(s));
          // Columns past f, and rows past n, are left alone.
          for (int64_t c = f; c < panels * hcols; ++c) CHECK(side[c * R] == -7.0f);
          for (int64_t c = 0; c < f; ++c) CHECK(side[c * R + n] == -7.0f);

          // Down over fr rows into a token's row of y, the last panel clipped at cols_end.
          const int64_t fr = 96, ldy = panels * 2 * L + 5, cols_end = panels * 2 * L - 5;
          const Panels w2 = random_panels(s, panels, fr, L, rng);
          std::vector<float> hp(static_cast<size_t>(fr * R), 0.0f);
          for (int64_t j = 0; j < fr * R; ++j) hp[j] = value(rng);
          const std::vector<float> hsums = q4_group_sums(hp, fr, n, R);
          // Rows go to tokens 3, 1 and 0 of four; token 2 is nobody's.
          const int32_t tokens[kMaxPanelRows] = {3, 1, 0};
          const float weights[kMaxPanelRows] = {0.75f, -0.5f, 0.25f};
          std::vector<float> y_one(static_cast<size_t>(4 * ldy)), y_side;
          for (float& v : y_one) v = value(rng);
          y_side = y_one;
          for (int p = 0; p < panels; ++p) {
            QuantArgs q;
            if (!w2.scales.empty()) q.scales = w2.scales.data() + p * w2.scale_bytes;
            q.group_sums = hsums.data();
            isa->down(hp.data(), w2.data.data() + p * w2.panel_bytes, fr, n, tokens, weights,
                      y_one.data(), ldy, p * 2 * L, std::min<int64_t>(2 * L, cols_end - p * 2 * L),
                      s, q);
          }
          QuantArgs q;
          q.scales = w2.scales.empty() ? nullptr : w2.scales.data();
          q.group_sums = hsums.data();
          const std::vector<float> y_before = y_side;  // y as both started
          isa->down_panels(hp.data(), w2.data.data(), w2.panel_bytes, panels, fr, n, tokens,
                           weights, y_side.data(), ldy, 0, cols_end, s, q, w2.scale_bytes);
          check_close(y_side, y_one, 1e-5);
          // The rows of tokens no row goes to, and the columns past cols_end, are untouched.
          for (int64_t t = 0; t < 4; ++t) {
            const bool taken = std::find(tokens, tokens + n, t) != tokens + n;
            for (int64_t c = 0; c < ldy; ++c) {
              if (!taken || c >= cols_end) CHECK(y_side[t * ldy + c] == y_before[t * ldy + c]);
            }
          }
        }
    }
  }
}

}  // namespace panels_test
