// AMX-BF16 micro-kernels: TDPBF16PS multiplies a 16 x 32 bf16 tile of activations by a 32 x 16
// bf16 tile of weights into a 16 x 16 FP32 tile, sixteen vdpbf16ps in one instruction. The
// weight panels of the AVX512-BF16 kernels are already in the layout a B tile wants (a row of
// the tile is one reduction pair of 16 columns, 64 bytes; the panel's 32 columns are two tiles at
// a 128-byte stride), so `prepare()` packs once for both. The activations and hidden values come
// in pair words blocked by 16 pairs (IsaKernels::kblock): each full step of 16 pairs is already a
// row-major A tile (64 bytes a row), loaded as it lies; only the pairs past the last full block
// are k-major (xw[p * 16 + r]) and gathered into a zero-padded tile. Epilogues (activation after
// gate/up, routing weight and scatter-add after down) are the AVX-512 ones, on the FP32 sums stored
// from the C tiles.
//
// Tiles used: 0 = A (16 rows x 16 pairs), 1 and 2 = B (columns [0, 16) and [16, 32)), 4 and 5 =
// C (the sums of those columns). Every tile is configured 16 rows x 64 bytes; short row blocks,
// short reductions and odd widths are zero padded.
//
// The kernels are written once over a tile backend: `RealTiles` (the AMX instructions; compiled
// with -mamx-tile -mamx-bf16, run only where the CPU has AMX and Linux granted the tile state)
// and `ModelTiles`, a plain C++ model of the four operations used, so that the layout, tiling
// and epilogues are tested on CPUs without AMX (cpu::make_amx_model_kernel).
#include <immintrin.h>

#include <cstring>

#include "cpu_isa.hpp"
#include "moe_bench/amx_config.hpp"

namespace moe_bench::cpu {
namespace amx {

#include "avx512_vec.hpp"

constexpr int kRows = 16;
#include "kernel_math.hpp"

constexpr int kPairs = 16;         // reduction pairs per tile step: 32 bf16, one 64-byte tile row
constexpr int kPanelWords = 64;    // bf16 values per pair of a panel: 32 columns x 2 rows
constexpr int kPrefetchSteps = 4;  // weight tile steps (2 KiB each) between a prefetch and its use

inline float bf16_to_float(uint16_t bits) {
  const uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float f = 0;
  std::memcpy(&f, &wide, 4);
  return f;
}

// The software model: tile registers as bytes, each operation as the instruction reference
// defines it. TDPBF16PS adds, for each pair k, the product of the low halves and then the product
// of the high halves to the FP32 sum (bf16 x bf16 is exact in FP32, so fused or not is the same).
struct ModelTiles {
  alignas(64) unsigned char t[8][16][64];

  void begin() {}
  template <int I>
  void zero() {
    std::memset(t[I], 0, sizeof t[I]);
  }
  template <int I>
  void load(const void* p, int64_t stride) {
    for (int r = 0; r < 16; ++r) std::memcpy(t[I][r], static_cast<const char*>(p) + r * stride, 64);
  }
  template <int I>
  void store(void* p, int64_t stride) const {
    for (int r = 0; r < 16; ++r) std::memcpy(static_cast<char*>(p) + r * stride, t[I][r], 64);
  }
  template <int C, int A, int B>
  void dpbf16() {
    for (int m = 0; m < 16; ++m) {
      for (int n = 0; n < 16; ++n) {
        float acc = 0;
        std::memcpy(&acc, &t[C][m][4 * n], 4);
        for (int k = 0; k < 16; ++k) {
          uint16_t a[2], b[2];
          std::memcpy(a, &t[A][m][4 * k], 4);
          std::memcpy(b, &t[B][k][4 * n], 4);
          acc += bf16_to_float(a[0]) * bf16_to_float(b[0]);
          acc += bf16_to_float(a[1]) * bf16_to_float(b[1]);
        }
        std::memcpy(&t[C][m][4 * n], &acc, 4);
      }
    }
  }
};

// The AMX instructions. The tile configuration is per thread: loaded once by each thread.
struct RealTiles {
  void begin() {
    thread_local bool configured = false;
    if (configured) return;
    _tile_loadconfig(&kAmxTileConfig);
    configured = true;
  }
  // GCC's tile intrinsics paste their register number into the instruction text: each tile
  // this file uses is spelled out. They are asm statements without a memory clobber: GCC does
  // not know that a load reads the memory it points at, or that a store writes it, and dropped
  // the stores into a stack tile that only a tile load read (inf on the first AMX CPU this ran
  // on). The compiler barriers around them say so.
  static void barrier() { asm volatile("" ::: "memory"); }
  template <int I>
  void zero() {
    static_assert(I == 4 || I == 5);
    if constexpr (I == 4) _tile_zero(4);
    if constexpr (I == 5) _tile_zero(5);
  }
  template <int I>
  void load(const void* p, int64_t stride) {
    static_assert(I == 0 || I == 1 || I == 2 || I == 4 || I == 5);
    barrier();
    if constexpr (I == 0) _tile_loadd(0, p, stride);
    if constexpr (I == 1) _tile_loadd(1, p, stride);
    if constexpr (I == 2) _tile_loadd(2, p, stride);
    if constexpr (I == 4) _tile_loadd(4, p, stride);
    if constexpr (I == 5) _tile_loadd(5, p, stride);
  }
  template <int I>
  void store(void* p, int64_t stride) const {
    static_assert(I == 4 || I == 5);
    if constexpr (I == 4) _tile_stored(4, p, stride);
    if constexpr (I == 5) _tile_stored(5, p, stride);
    barrier();
  }
  template <int C, int A, int B>
  void dpbf16() {
    static_assert((C == 4 && A == 0 && B == 1) || (C == 5 && A == 0 && B == 2));
    if constexpr (C == 4) _tile_dpbf16ps(4, 0, 1);
    if constexpr (C == 5) _tile_dpbf16ps(5, 0, 2);
  }
};

// The FP32 sums [16 rows][32 columns] of a row block against a 32-column panel over `pairs`
// reduction pairs, started from acc_in (same layout) or zero; `out` may be acc_in.
template <class Tiles>
void tile_sums(const uint32_t* src, const uint16_t* wp, int64_t pairs, int64_t n,
               const float* acc_in, float* out) {
  Tiles t;
  t.begin();
  if (acc_in != nullptr) {
    t.template load<4>(acc_in, 128);
    t.template load<5>(acc_in + 16, 128);
  } else {
    t.template zero<4>();
    t.template zero<5>();
  }
  // Full steps: the A tile lies in src as it is loaded (rows of the block past n hold stale
  // values, whose sums land only in rows of C that are not read).
  const int64_t full = pairs / kPairs * kPairs;
  for (int64_t p0 = 0; p0 < full; p0 += kPairs) {
    const uint16_t* b = wp + p0 * kPanelWords;
    // The weights of a step kPrefetchSteps ahead (32 lines): tile loads from memory are not
    // followed by the hardware prefetchers as vector loads are. Past the call's chunk this
    // reaches into the next chunk of the same panel, which the next call reads.
    const char* ahead = reinterpret_cast<const char*>(b + kPrefetchSteps * kPairs * kPanelWords);
    for (int line = 0; line < kPairs * kPanelWords * 2 / 64; ++line) {
      __builtin_prefetch(ahead + line * 64);
    }
    t.template load<0>(src + p0 * kRows, 64);
    t.template load<1>(b, 128);
    t.template load<2>(b + 32, 128);
    t.template dpbf16<4, 0, 1>();
    t.template dpbf16<5, 0, 2>();
  }
  if (full < pairs) {  // the last, short step, k-major: zero pairs beyond the reduction
    const int64_t np = pairs - full;
    alignas(64) uint32_t a[16][kPairs];
    alignas(64) uint16_t tail[kPairs * kPanelWords];
    for (int r = 0; r < 16; ++r) {
      for (int j = 0; j < kPairs; ++j) a[r][j] = r < n && j < np ? src[(full + j) * kRows + r] : 0u;
    }
    std::memset(tail, 0, sizeof tail);
    std::memcpy(tail, wp + full * kPanelWords, static_cast<size_t>(np * kPanelWords) * 2);
    t.template load<0>(a, 64);
    t.template load<1>(tail, 128);
    t.template load<2>(tail + 32, 128);
    t.template dpbf16<4, 0, 1>();
    t.template dpbf16<5, 0, 2>();
  }
  t.template store<4>(out, 128);
  t.template store<5>(out + 16, 128);
}

inline uint16_t bf16_bits_of(float rounded) {
  uint32_t bits = 0;
  std::memcpy(&bits, &rounded, 4);
  return static_cast<uint16_t>(bits >> 16);
}

// 16 floats rounded to bf16 bits as round_hidden<kBF16> rounds them (to nearest even; a NaN
// keeps its upper half), packed into 16 halves.
inline __m256i bf16_rounded(const float* x) {
  const __m512i bits = _mm512_castps_si512(_mm512_loadu_ps(x));
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_add_epi32(bits, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb));
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(
      _mm512_and_si512(bits, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
  return _mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_mask_mov_epi32(rounded, nan, bits), 16));
}

// The half of the pair word holding hidden column `col` of row r, in a hidden block of `pairs`
// pairs (the blocked layout of IsaKernels::kblock).
inline uint16_t& hidden_at(float* hw, int64_t col, int r, int64_t pairs) {
  return reinterpret_cast<uint16_t*>(
      hw)[pair_word(col >> 1, r, kRows, pairs, kPairs) * 2 + (col & 1)];
}

template <class Tiles>
void gate_up(const float* xw, const void* wp, int64_t d, int64_t n, float* hw, int64_t col0,
             int64_t f, Act act, const float* acc_in, float* acc_out, Storage, QuantArgs) {
  constexpr int L = V::kLanes;
  alignas(64) float sums[16 * 2 * L];
  tile_sums<Tiles>(reinterpret_cast<const uint32_t*>(xw), static_cast<const uint16_t*>(wp),
                   (d + 1) / 2, n, acc_in, acc_out != nullptr ? acc_out : sums);
  if (acc_out != nullptr) return;
  alignas(64) float tmp[2 * L];
  for (int r = 0; r < n; ++r) {
    const int64_t cols =
        activate(V::load(sums + r * 2 * L), V::load(sums + r * 2 * L + L), act, tmp);
    const int64_t valid = f - col0 < cols ? f - col0 : cols;
    const int64_t pairs = (f + 1) / 2, blocked = pairs / kPairs * kPairs;
    int64_t c = 0;
    // 16 columns at a time where their 8 pairs lie in a full block: one row of a tile, 32
    // contiguous bytes (col0 is a multiple of 16, so such 8 pairs never straddle two blocks).
    for (; c + L <= valid && ((col0 + c) >> 1) + L / 2 <= blocked; c += L) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(&hidden_at(hw, col0 + c, r, pairs)),
                          bf16_rounded(tmp + c));
    }
    for (; c < valid; ++c) {
      hidden_at(hw, col0 + c, r, pairs) = bf16_bits_of(round_hidden<Storage::kBF16>(tmp[c]));
    }
    if (col0 + valid == f && (f & 1) != 0) hidden_at(hw, f, r, pairs) = 0;
  }
}

template <class Tiles>
void down(const float* hw, const void* wp, int64_t f, int64_t n, const int32_t* tokens,
          const float* weights, float* y, int64_t ldy, int64_t col0, int64_t ncols, Storage,
          QuantArgs) {
  constexpr int L = V::kLanes;
  alignas(64) float sums[16 * 2 * L];
  tile_sums<Tiles>(reinterpret_cast<const uint32_t*>(hw), static_cast<const uint16_t*>(wp),
                   (f + 1) / 2, n, nullptr, sums);
  for (int r = 0; r < n; ++r) {
    combine_row(V::load(sums + r * 2 * L), V::load(sums + r * 2 * L + L), weights[r],
                y + static_cast<int64_t>(tokens[r]) * ldy + col0, ncols);
  }
}

}  // namespace amx

const IsaKernels& amx_kernels() {
  static const IsaKernels kKernels{"amx-bf16",
                                   amx::V::kLanes,
                                   amx::kRows,
                                   amx::gate_up<amx::RealTiles>,
                                   amx::down<amx::RealTiles>,
                                   amx::dot_rows,
                                   /*kpack=*/2,
                                   /*bf16_only=*/true,
                                   /*kblock=*/amx::kPairs};
  return kKernels;
}

const IsaKernels& amx_model_kernels() {
  static const IsaKernels kKernels{"amx-bf16 (software model of the tiles)",
                                   amx::V::kLanes,
                                   amx::kRows,
                                   amx::gate_up<amx::ModelTiles>,
                                   amx::down<amx::ModelTiles>,
                                   amx::dot_rows,
                                   /*kpack=*/2,
                                   /*bf16_only=*/true,
                                   /*kblock=*/amx::kPairs};
  return kKernels;
}

}  // namespace moe_bench::cpu
