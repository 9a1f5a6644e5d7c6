// Packing a layer's weights into the cpu kernels' layout (cpu_pack.hpp).
#include "cpu_pack.hpp"

#include <omp.h>

#include <algorithm>
#include <cstring>

namespace moe_bench::cpu {

void pack_layer(const PackSpec& spec, const Shape& s, Dtype dtype, const LayerWeights& w,
                const std::vector<uint8_t>& held, PackedLayer& out) {
  const int64_t d = s.d_model, L = spec.lanes, L2 = 2 * L;
  const int64_t down_panels = (d + L2 - 1) / L2;
  struct Source {
    const float *w1, *w3, *w2;
    int64_t width;
  };
  const int64_t kp = spec.kpack, d_pad = spec.d_pad;
  // Element of reduction row i, column c in a panel: row-major, or bf16 pairs of rows.
  auto at = [kp, L2](int64_t i, int64_t c) {
    return kp == 1 ? i * L2 + c : (i & ~int64_t{1}) * L2 + 2 * c + (i & 1);
  };
  std::vector<Source> sources;
  for (int64_t e = 0; e < s.experts; ++e) {
    // An expert not held here: an empty group (no rows are ever dispatched to it).
    if (!held.empty() && !held[static_cast<size_t>(e)]) {
      sources.push_back({nullptr, nullptr, nullptr, 0});
      continue;
    }
    sources.push_back({w.w1.data() + e * s.d_ff * d,
                       spec.gated ? w.w3.data() + e * s.d_ff * d : nullptr,
                       w.w2.data() + e * d * s.d_ff, s.d_ff});
  }
  if (s.shared_width() > 0) {
    sources.push_back(
        {w.ws1.data(), spec.gated ? w.ws3.data() : nullptr, w.ws2.data(), s.shared_width()});
  }
  out.groups.clear();
  int64_t offset = 0;
  for (const Source& src : sources) {
    Group g;
    g.width = src.width;
    g.up_offset = offset;
    offset += (src.width + spec.hcols - 1) / spec.hcols * d_pad * L2;
    g.down_offset = offset;
    offset += down_panels * round_up(src.width, kp) * L2;
    out.groups.push_back(g);
  }
  out.data.resize(offset * spec.elem);
  char* base = out.data.data();
  // Pair layouts pad odd reductions with a zero row.
  if (kp != 1) std::memset(base, 0, static_cast<size_t>(offset * spec.elem));
  // Stores element `index` of the packed layer in the storage type (the values are already
  // representable: the problem was generated in the dtype).
  auto put = [base, dtype](int64_t index, float v) {
    if (dtype == Dtype::kF32) {
      reinterpret_cast<float*>(base)[index] = v;
    } else {
      reinterpret_cast<uint16_t*>(base)[index] =
          dtype == Dtype::kBF16 ? to_bf16_bits(v) : to_f16_bits(v);
    }
  };
  const bool gated = spec.gated;
  const int64_t hcols = spec.hcols;
#pragma omp parallel for schedule(dynamic, 1) num_threads(spec.threads)
  for (size_t gi = 0; gi < sources.size(); ++gi) {
    const Source& src = sources[gi];
    const Group& g = out.groups[gi];
    const int64_t f = src.width, panels = (f + hcols - 1) / hcols;
    if (f == 0) continue;
    for (int64_t pnl = 0; pnl < panels; ++pnl) {
      const int64_t dst = g.up_offset + pnl * d_pad * L2;
      for (int64_t c = 0; c < L2; ++c) {
        // Gated: columns [0, L) are W1 rows, [L, 2L) the W3 rows of the same hidden units.
        const bool up = gated && c >= L;
        const int64_t row = pnl * hcols + (gated ? c % L : c);
        const float* srow = row < f ? (up ? src.w3 : src.w1) + row * d : nullptr;
        for (int64_t i = 0; i < d; ++i) put(dst + at(i, c), srow != nullptr ? srow[i] : 0.0f);
      }
    }
    // Chunk-major: for each chunk of kDownChunk rows of the reduction, every panel's slice in
    // turn, so that the slices a down item reads together are adjacent.
    for (int64_t q = 0; q < down_panels; ++q) {
      for (int64_t c = 0; c < L2; ++c) {
        const int64_t row = q * L2 + c;
        const float* srow = row < d ? src.w2 + row * f : nullptr;
        for (int64_t j = 0; j < f; ++j) {
          const int64_t j0 = j / kDownChunk * kDownChunk;
          const int64_t fc_pad = round_up(std::min(kDownChunk, f - j0), kp);
          put(g.down_offset + j0 * down_panels * L2 + q * fc_pad * L2 + at(j - j0, c),
              srow != nullptr ? srow[j] : 0.0f);
        }
      }
    }
  }
}

}  // namespace moe_bench::cpu
