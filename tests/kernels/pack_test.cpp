// The cpu kernels' packed layout (cpu_pack.hpp), element by element, for every storage and both
// reduction layouts (rows, and the bf16 pairs of the AVX512-BF16 and AMX kernels), whatever the
// CPU: the pair layout is packed on every machine, though only some run its kernels.
#include <catch2/catch.hpp>
#include <cstring>
#include <vector>

#include "lib/kernels/cpu/cpu_pack.hpp"
#include "moe_bench/grid.hpp"

// Named, not file-wide: the unity build shares one scope between test files.
namespace pack_test {
using namespace moe_bench;
using namespace moe_bench::cpu;

namespace {

// The packed element at `index` (in elements of the storage) as float or code.
float packed_at(const PackedLayer& out, Storage s, int64_t L, int64_t index) {
  const char* base = out.data.data();
  switch (s) {
    case Storage::kF32:
      return reinterpret_cast<const float*>(base)[index];
    case Storage::kBF16:
      return from_bf16_bits(reinterpret_cast<const uint16_t*>(base)[index]);
    case Storage::kF16:
      return from_f16_bits(reinterpret_cast<const uint16_t*>(base)[index]);
    case Storage::kI8:
      return reinterpret_cast<const int8_t*>(base)[index];
    case Storage::kQ4: {
      const int64_t row = index / (2 * L), c = index % (2 * L);
      const auto byte = reinterpret_cast<const uint8_t*>(base)[row * L + c % L];
      return static_cast<float>((c < L ? byte & 0xf : byte >> 4) - 8);
    }
  }
  return 0;
}

}  // namespace

TEST_CASE("the packed layout holds every weight where the kernels read it, in every storage") {
  struct Setup {
    Storage storage;
    int64_t kpack;
    WeightFormat format;
    Dtype dtype;
  };
  const Setup setups[] = {{Storage::kF32, 1, WeightFormat::kSame, Dtype::kF32},
                          {Storage::kBF16, 1, WeightFormat::kSame, Dtype::kBF16},
                          {Storage::kBF16, 2, WeightFormat::kSame, Dtype::kBF16},
                          {Storage::kF16, 1, WeightFormat::kSame, Dtype::kF16},
                          {Storage::kI8, 1, WeightFormat::kInt8, Dtype::kF32},
                          {Storage::kQ4, 1, WeightFormat::kQ4, Dtype::kF32}};
  for (const Setup& su : setups) {
    for (int64_t L : {8, 16}) {
      for (bool gated : {true, false}) {
        // Widths that leave the last panel part empty; W2's reduction over two chunks
        // (kDownChunk); an odd d for the pairs' zero row (q4 needs multiples of 32).
        const bool q4 = su.storage == Storage::kQ4;
        Shape s = make_shape(3, 1, q4 ? 96 : 37, q4 ? 544 : 530, 1);
        s.shared_experts = 1;
        s.d_ff_shared = q4 ? 64 : 40;
        s.activation = gated ? Activation::kSwiglu : Activation::kGelu;
        s.weights = su.format;
        INFO(to_string(su.dtype) << " storage " << static_cast<int>(su.storage) << " kpack "
                                 << su.kpack << " L " << L << (gated ? " gated" : " gelu"));
        const Problem p = make_problem(s, su.dtype, 5);
        PackSpec spec{L,          su.kpack, round_up(s.d_model, su.kpack), gated ? L : 2 * L, gated,
                      su.storage, 2};
        PackedLayer out;
        pack_layer(spec, s, p.layers[0], {}, out);
        REQUIRE(out.groups.size() == 4);
        const int64_t d = s.d_model, L2 = 2 * L, kp = su.kpack;
        const auto at = [&](int64_t i, int64_t c) {
          return kp == 1 ? i * L2 + c : (i & ~int64_t{1}) * L2 + 2 * c + (i & 1);
        };
        // The weight (float, or code) of row r, column i of one of the group's matrices.
        std::vector<float> buf;
        const auto value = [&](int64_t group, ExpertMatrix m, int64_t r, int64_t i) {
          const int64_t e = group < 3 ? group : -1;
          if (su.format == WeightFormat::kSame) {
            const MatrixRows rows(p, 0, m, e);
            buf.resize(static_cast<size_t>(rows.cols()));
            return rows.row(r, buf.data())[i];
          }
          const QuantMatrix& q = p.layers[0].codes(m, e < 0);
          const int64_t rows = m == ExpertMatrix::kW2 ? d : (e < 0 ? s.shared_width() : s.d_ff);
          return static_cast<float>(
              q.codes[static_cast<size_t>(((e < 0 ? 0 : e) * rows + r) * q.cols + i)]);
        };
        int64_t wrong = 0, checked = 0;
        const int64_t down_panels = (d + L2 - 1) / L2;
        for (int64_t gi = 0; gi < 4; ++gi) {
          const Group& g = out.groups[gi];
          const int64_t width = gi < 3 ? s.d_ff : s.shared_width();
          REQUIRE(g.width == width);
          const int64_t panels = (width + spec.hcols - 1) / spec.hcols;
          for (int64_t pnl = 0; pnl < panels; ++pnl) {
            for (int64_t c = 0; c < L2; ++c) {
              const bool up = gated && c >= L;
              const int64_t row = pnl * spec.hcols + (gated ? c % L : c);
              for (int64_t i = 0; i < d; ++i) {
                const float want =
                    row < width ? value(gi, up ? ExpertMatrix::kW3 : ExpertMatrix::kW1, row, i)
                                : 0.0f;
                wrong += packed_at(out, su.storage, L,
                                   g.up_offset + pnl * spec.d_pad * L2 + at(i, c)) != want;
                ++checked;
              }
            }
          }
          for (int64_t q = 0; q < down_panels; ++q) {
            for (int64_t c = 0; c < L2; ++c) {
              const int64_t row = q * L2 + c;
              for (int64_t j = 0; j < width; ++j) {
                const int64_t j0 = j / kDownChunk * kDownChunk;
                const int64_t fc = std::min(kDownChunk, width - j0);
                const int64_t index = g.down_offset + j0 * down_panels * L2 +
                                      q * round_up(fc, kp) * L2 + at(j - j0, c);
                const float want = row < d ? value(gi, ExpertMatrix::kW2, row, j) : 0.0f;
                wrong += packed_at(out, su.storage, L, index) != want;
                ++checked;
              }
            }
          }
        }
        CHECK(checked > 0);
        CHECK(wrong == 0);
      }
    }
  }
}

}  // namespace pack_test
