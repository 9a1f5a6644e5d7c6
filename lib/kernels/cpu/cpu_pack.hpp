// The packed layout of the cpu kernels' weights, and the packing. Gate/up panels interleave W1
// and W3 rows (or 2L rows of W1 for GELU) per panel of hidden columns; down panels are
// chunk-major, so the slices a down item reads together are adjacent (cpu_isa.hpp has the
// element layouts).
#pragma once

#include <cstdint>
#include <vector>

#include "cpu_isa.hpp"
#include "moe_bench/aligned.hpp"
#include "moe_bench/dtype.hpp"
#include "moe_bench/problem.hpp"
#include "moe_bench/shape.hpp"

namespace moe_bench::cpu {

/// One FFN in the packed layout: a routed expert, or all shared experts fused into one.
/// Offsets count elements of the storage type in `data` (storage_bytes converts) and bytes in
/// `scales`.
struct Group {
  int64_t width = 0;
  int64_t up_offset = 0;  ///< gate/up panels: ceil(width / hcols) x d x 2L
  int64_t down_offset =
      0;  ///< down panels, chunk-major: (width / chunk) x ceil(d / 2L) x chunk x 2L
  /// Quantized weights (cpu_isa.hpp, QuantArgs): int8 has 2L f32 scales per gate/up panel and
  /// per down panel; q4 has 2L f16 scales per group of kQ4Rows reduction rows, gate/up
  /// [panel][d / 32][2L] and down [output panel][width / 32][2L].
  int64_t up_scales = 0, down_scales = 0;
};

struct PackedLayer {
  Aligned<char> data;         ///< elements of the storage type
  Aligned<char> scales;       ///< quantized weights' scales, empty otherwise
  std::vector<Group> groups;  ///< E routed experts, then the shared group when there is one
};

// Rows of the down projection's weight panel reduced per pass: 512 x 32 floats = 64 KiB, which
// stays in L2 beside the hidden chunks of all row blocks (measured best of 64..4096 on A at 512).
constexpr int64_t kDownChunk = 512;

inline int64_t round_up(int64_t n, int64_t multiple) {
  return (n + multiple - 1) / multiple * multiple;
}

/// The micro-kernels' layout parameters.
struct PackSpec {
  int64_t lanes = 0;  ///< L: a panel is 2L columns
  int64_t kpack = 1;  ///< reduction rows per step (2: bf16 pairs)
  int64_t d_pad = 0;  ///< d rounded up to kpack
  int64_t hcols = 0;  ///< hidden columns per gate/up panel (L gated, 2L GELU)
  bool gated = true;
  Storage storage = Storage::kF32;
  int threads = 1;
};

/// Packs one layer's weights (`held`: the experts to pack, empty: all; others get empty groups),
/// in `spec.storage` (the values are already representable in it; quantized storage packs the
/// problem's codes and scales), on `spec.threads`.
void pack_layer(const PackSpec& spec, const Shape& s, const LayerWeights& w,
                const std::vector<uint8_t>& held, PackedLayer& out);

}  // namespace moe_bench::cpu
