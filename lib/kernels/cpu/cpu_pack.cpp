// Packing a layer's weights into the cpu kernels' layout (cpu_pack.hpp).
#include "cpu_pack.hpp"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace moe_bench::cpu {

namespace {

// One matrix of a group as its source rows: floats, or codes and scales of a quantized matrix
// from row `row0` on.
struct Rows {
  const float* w = nullptr;
  const QuantMatrix* q = nullptr;
  int64_t row0 = 0;
};

// Columns of a panel: 2L, at most 32 (AVX-512).
constexpr int64_t kMaxColumns = 32;

// Stores reduction rows [0, n) of the 2L columns of one panel block that starts at element `dst`
// of the packed layer (a multiple of 2L), in the storage type S: element (i, c) is rows[c][first +
// i] (the values are already representable: the problem was generated in the dtype), or, for
// quantized storage, codes[c][first + i]. Row-major, or bf16 pairs of rows (kp 2); q4 puts column
// c + L of a row in the high nibble of column c's byte, a row of L bytes after another, or with
// kp 2 (16 lanes, n a multiple of 4) in units of four rows whose 16-bit words widen to bf16 pairs:
// row 4j + 2h + o, column c at byte 64j + 4c + 2o + h (cpu_avx512_bf16.cpp). A row of the block
// at a time, so that the stores are contiguous and the 2L sources are read as 2L sequential
// streams.
template <Storage S>
void put_block(char* base, int64_t dst, int64_t n, int64_t L, int64_t kp, const float* const* rows,
               const int8_t* const* codes, int64_t first) {
  const int64_t L2 = 2 * L;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t k = first + i;
    if constexpr (S == Storage::kQ4) {
      auto* block = reinterpret_cast<uint8_t*>(base) + dst / L2 * L;
      for (int64_t c = 0; c < L; ++c) {
        const int64_t at = kp == 1 ? i * L + c : (i / 4) * 64 + 4 * c + 2 * (i % 2) + i % 4 / 2;
        block[at] = static_cast<uint8_t>((codes[c][k] + 8) | (codes[c + L][k] + 8) << 4);
      }
    } else {
      // Element (i, c): i * 2L + c, or in pairs (i & ~1) * 2L + 2c + (i & 1).
      const int64_t row = dst + (kp == 1 ? i * L2 : (i & ~int64_t{1}) * L2 + (i & 1));
      const int64_t step = kp == 1 ? 1 : 2;
      for (int64_t c = 0; c < L2; ++c) {
        const int64_t index = row + c * step;
        if constexpr (S == Storage::kF32) {
          reinterpret_cast<float*>(base)[index] = rows[c][k];
        } else if constexpr (S == Storage::kI8) {
          reinterpret_cast<int8_t*>(base)[index] = codes[c][k];
        } else if constexpr (S == Storage::kBF16) {
          reinterpret_cast<uint16_t*>(base)[index] = to_bf16_bits(rows[c][k]);
        } else {
          reinterpret_cast<uint16_t*>(base)[index] = to_f16_bits(rows[c][k]);
        }
      }
    }
  }
}

}  // namespace

void pack_layer(const PackSpec& spec, const Shape& s, const LayerWeights& w,
                const std::vector<uint8_t>& held, PackedLayer& out) {
  const int64_t d = s.d_model, L = spec.lanes, L2 = 2 * L;
  const int64_t down_panels = (d + L2 - 1) / L2;
  const Storage storage = spec.storage;
  const bool i8 = storage == Storage::kI8, q4 = storage == Storage::kQ4;
  const WeightFormat format = s.weights;
  struct Source {
    Rows w1, w3, w2;
    int64_t width;
  };
  const int64_t kp = spec.kpack, d_pad = spec.d_pad;
  if (q4 && kp != 1 && L != 16) throw std::logic_error("q4 pairs are packed for 16 lanes only");
  const int64_t f = s.d_ff;
  // A quantized layer holds no floats (problem.hpp): its rows are its codes.
  auto floats_at = [](const std::vector<float>& v, int64_t offset) {
    return v.empty() ? nullptr : v.data() + offset;
  };
  std::vector<Source> sources;
  for (int64_t e = 0; e < s.experts; ++e) {
    // An expert not held here: an empty group (no rows are ever dispatched to it).
    if (!held.empty() && !held[static_cast<size_t>(e)]) {
      sources.push_back({{}, {}, {}, 0});
      continue;
    }
    sources.push_back({{floats_at(w.w1, e * f * d), &w.q1, e * f},
                       spec.gated ? Rows{floats_at(w.w3, e * f * d), &w.q3, e * f} : Rows{},
                       {floats_at(w.w2, e * d * f), &w.q2, e * d},
                       f});
  }
  if (s.shared_width() > 0) {
    sources.push_back({{floats_at(w.ws1, 0), &w.qs1, 0},
                       spec.gated ? Rows{floats_at(w.ws3, 0), &w.qs3, 0} : Rows{},
                       {floats_at(w.ws2, 0), &w.qs2, 0},
                       s.shared_width()});
  }
  // Bytes of the scales of one panel row group: int8 2L floats per panel; q4 2L halves per group.
  const int64_t up_groups = q4 ? d / kQ4Rows : 1;
  out.groups.clear();
  int64_t offset = 0, scale_bytes = 0;
  for (const Source& src : sources) {
    Group g;
    g.width = src.width;
    g.up_offset = offset;
    const int64_t panels = (src.width + spec.hcols - 1) / spec.hcols;
    offset += panels * d_pad * L2;
    g.down_offset = offset;
    offset += down_panels * round_up(src.width, kp) * L2;
    if (i8 || q4) {
      const int64_t per = L2 * (q4 ? 2 : 4);
      g.up_scales = scale_bytes;
      scale_bytes += panels * up_groups * per;
      g.down_scales = scale_bytes;
      scale_bytes += down_panels * (q4 ? src.width / kQ4Rows : 1) * per;
    }
    out.groups.push_back(g);
  }
  out.data.resize(storage_bytes(storage, offset));
  out.scales.resize(scale_bytes);
  char* base = out.data.data();
  // Pair layouts pad odd reductions with a zero row.
  if (kp != 1) std::memset(base, 0, static_cast<size_t>(storage_bytes(storage, offset)));
  // The codes of row `row` of a source matrix (nullptr: not quantized), found once a row.
  auto codes_of = [](const Rows& m, int64_t row) -> const int8_t* {
    return m.q == nullptr || m.q->empty() ? nullptr
                                          : m.q->codes.data() + (m.row0 + row) * m.q->cols;
  };
  auto scale_of = [format](const Rows& m, int64_t row, int64_t i) {
    return m.q->scale(format, m.row0 + row, i);
  };
  char* sbase = out.scales.data();
  auto put_scale = [sbase, q4](int64_t byte_offset, int64_t index, float v) {
    if (q4) {
      reinterpret_cast<uint16_t*>(sbase + byte_offset)[index] = to_f16_bits(v);
    } else {
      reinterpret_cast<float*>(sbase + byte_offset)[index] = v;
    }
  };
  // Columns past a matrix's rows (and rows of a layer that holds no floats) read zeros.
  const std::vector<float> zeros(static_cast<size_t>(std::max(d, s.d_ff) + s.shared_width()));
  const std::vector<int8_t> zero_codes(zeros.size());
  const bool gated = spec.gated;
  const int64_t hcols = spec.hcols;
  const auto pack = [&]<Storage S>() {
#pragma omp parallel for schedule(dynamic, 1) num_threads(spec.threads)
    for (size_t gi = 0; gi < sources.size(); ++gi) {
      const Source& src = sources[gi];
      const Group& g = out.groups[gi];
      const int64_t width = src.width, panels = (width + hcols - 1) / hcols;
      if (width == 0) continue;
      const float* rows[kMaxColumns];
      const int8_t* codes[kMaxColumns];
      for (int64_t pnl = 0; pnl < panels; ++pnl) {
        for (int64_t c = 0; c < L2; ++c) {
          // Gated: columns [0, L) are W1 rows, [L, 2L) the W3 rows of the same hidden units.
          const bool up = gated && c >= L;
          const int64_t row = pnl * hcols + (gated ? c % L : c);
          const Rows& m = up ? src.w3 : src.w1;
          const bool real = row < width;
          rows[c] = real && m.w != nullptr ? m.w + row * d : zeros.data();
          const int8_t* crow = real ? codes_of(m, row) : nullptr;
          codes[c] = crow != nullptr ? crow : zero_codes.data();
          if (!i8 && !q4) continue;
          for (int64_t grp = 0; grp < up_groups; ++grp) {
            put_scale(g.up_scales, (pnl * up_groups + grp) * L2 + c,
                      real ? scale_of(m, row, grp * kQ4Rows) : 0.0f);
          }
        }
        put_block<S>(base, g.up_offset + pnl * d_pad * L2, d, L, kp, rows, codes, 0);
      }
      // Chunk-major: for each chunk of kDownChunk rows of the reduction, every panel's slice in
      // turn, so that the slices a down item reads together are adjacent.
      const int64_t down_groups = q4 ? width / kQ4Rows : 1;
      for (int64_t q = 0; q < down_panels; ++q) {
        for (int64_t c = 0; c < L2; ++c) {
          const int64_t row = q * L2 + c;
          const bool real = row < d;
          rows[c] = real && src.w2.w != nullptr ? src.w2.w + row * width : zeros.data();
          const int8_t* crow = real ? codes_of(src.w2, row) : nullptr;
          codes[c] = crow != nullptr ? crow : zero_codes.data();
          if (!i8 && !q4) continue;
          for (int64_t grp = 0; grp < down_groups; ++grp) {
            put_scale(g.down_scales, (q * down_groups + grp) * L2 + c,
                      real ? scale_of(src.w2, row, grp * kQ4Rows) : 0.0f);
          }
        }
        for (int64_t j0 = 0; j0 < width; j0 += kDownChunk) {
          const int64_t fc = std::min(kDownChunk, width - j0);
          put_block<S>(base, g.down_offset + j0 * down_panels * L2 + q * round_up(fc, kp) * L2, fc,
                       L, kp, rows, codes, j0);
        }
      }
    }
  };
  switch (storage) {
    case Storage::kF32:
      return pack.template operator()<Storage::kF32>();
    case Storage::kBF16:
      return pack.template operator()<Storage::kBF16>();
    case Storage::kF16:
      return pack.template operator()<Storage::kF16>();
    case Storage::kI8:
      return pack.template operator()<Storage::kI8>();
    case Storage::kQ4:
      return pack.template operator()<Storage::kQ4>();
  }
}

}  // namespace moe_bench::cpu
