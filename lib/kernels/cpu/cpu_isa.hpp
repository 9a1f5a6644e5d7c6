#pragma once

#include <cstdint>

namespace moe_bench::cpu {

/// Activations as the micro-kernels take them.
enum class Act : int { kSwiglu = 0, kGelu = 1, kSwigluOai = 2 };

/// Storage of packed weights and hidden activations (accumulation is always FP32). The
/// micro-kernels keep their own copy of this enum so they include no shared headers.
/// kI8 and kQ4 are quantized weights (1 byte, half a byte) with FP32 or bf16 activations.
enum class Storage : int { kF32 = 0, kBF16 = 1, kF16 = 2, kI8 = 3, kQ4 = 4 };

/// Bytes of `elements` weights stored as `s` (q4: two a byte; counts here are even). The
/// micro-kernels evaluate it at compile time only (constexpr), so no shared symbol crosses ISAs.
constexpr int64_t storage_bytes(Storage s, int64_t elements) {
  switch (s) {
    case Storage::kF32:
      return 4 * elements;
    case Storage::kBF16:
    case Storage::kF16:
      return 2 * elements;
    case Storage::kI8:
      return elements;
    case Storage::kQ4:
      return elements / 2;
  }
  return 4 * elements;
}

/// Rows of the reduction per q4 scale (moe_bench::kQ4Group).
constexpr int64_t kQ4Rows = 32;

/// Rows of a block up to which the micro-kernels run their decode loop (kernel_body.hpp,
/// accumulate_decode): four, and two for q4, which there takes its group sums from
/// QuantArgs::group_sums. (q4 at three and four rows kept its own loop: measured side by side on
/// an AMD Zen 3 at workloads A and B with 16 tokens, the decode loop was no faster for it, where
/// int8 took 0.84-0.93x the time.)
constexpr int kDecodeRows = 4;
constexpr int kQ4DecodeRows = 2;

/// Panels at most that IsaKernels::gate_up_panels and down_panels stream side by side: four at
/// one row, two at two or three rows (side_by_side_panels()).
constexpr int kMaxPanels = 4;
constexpr int kMaxPanelRows = 3;
constexpr int side_by_side_panels(int64_t rows) { return rows == 1 ? 4 : rows <= 3 ? 2 : 1; }

/// What quantized panels need besides their codes; ignored for the other storages.
/// - kI8: `scales` are the panel's 2L f32 per-column scales (a column is an output channel),
///   applied to the raw sums once the whole reduction is in (after the last chunk);
/// - kQ4: `scales` are f16, 2L per group of kQ4Rows reduction rows, from the group where the
///   call's reduction starts; each group's codes are dequantized in registers.
/// `hidden`: the storage of hidden values (the activation dtype: kF32, kBF16 or kF16).
/// `group_sums` (kQ4 with at most kQ4DecodeRows rows, or any rows where the kernels take q4 pairs
/// (IsaKernels::q4_pairs): required; otherwise ignored): -8 times the
/// sum of each group's activations of each row, [group * R + r] from the call's first group.
struct QuantArgs {
  const void* scales = nullptr;
  Storage hidden = Storage::kF32;
  const float* group_sums = nullptr;
};

/// The micro-kernels of one instruction set. Layouts (L = lanes, R = rows):
/// - a row block of activations is packed k-major: xp[i * R + r] for i < d (rows r >= n unused);
/// - weights are stored as `Storage` (float, or 16-bit bf16/f16 bits, or int8 codes, or q4
///   codes), converted to FP32 in registers; hidden values are rounded to the storage type (for
///   quantized weights: to QuantArgs::hidden) when written;
/// - int8 panels hold one signed byte per weight at the float layout's index; a q4 panel row of
///   2L columns is L bytes, byte c holding column c in its low nibble and column c + L in its
///   high one, as code + 8 (0..15);
/// - a gate/up weight panel is wp[i * 2L + c]: gated, c < L is W1 row c and c >= L is W3 row
///   c - L of the panel; ungated (GELU), 2L rows of W1;
/// - the hidden block is written k-major for the down projection: hp[j * R + r];
/// - a down weight panel is wp[j * 2L + c]: W2 row (output column) c of the panel, j < f.
struct IsaKernels {
  const char* name;
  int lanes;
  int rows;
  /// Hidden columns [col0, col0 + L) (gated) or [col0, col0 + 2L) (GELU), clipped to f, for the
  /// n rows of a block: h = act(W1 x, W3 x), reducing over d rows of xp and wp. The reduction can
  /// be split in chunks: `acc_in` (R x 2L raw sums, or null for zero) starts it, and a non-null
  /// `acc_out` receives the raw sums instead of the activated hidden values.
  void (*gate_up)(const float* xp, const void* wp, int64_t d, int64_t n, float* hp, int64_t col0,
                  int64_t f, Act act, const float* acc_in, float* acc_out, Storage storage,
                  QuantArgs quant);
  /// y[token_r, col0 + c] += weight_r * (W2 h_r)[c] for c < ncols (at most 2L) and r < n.
  void (*down)(const float* hp, const void* wp, int64_t f, int64_t n, const int32_t* tokens,
               const float* weights, float* y, int64_t ldy, int64_t col0, int64_t ncols,
               Storage storage, QuantArgs quant);
  /// out[e] = dot(x, w[e * d ...]) for e < rows.
  void (*dot_rows)(const float* x, const float* w, int64_t rows, int64_t d, float* out);
  /// Reduction rows per step: 1 for the layouts above; 2 for the bf16 pair layouts of
  /// cpu_avx512_bf16.cpp, where xp and hp hold one 32-bit word (two bf16 values) per pair of rows
  /// and a row, panels are padded to an even number of rows, and pointers into xp/hp advance by
  /// (row / kpack) * R words.
  int kpack = 1;
  /// Takes the bf16 dtype only: bf16 storage, and q4 where q4_pairs says so.
  bool bf16_only = false;
  /// Pair words in blocks (kpack 2 only): within each full block of `kblock` pairs the words of
  /// a row block are row-major, [r][j], the rows of an AMX A tile; pairs past the last full block
  /// stay k-major (pair_word()). 1: k-major throughout. Chunks of the reduction start at
  /// multiples of kblock pairs, so a pointer advanced by (row / kpack) * R words is at the same
  /// place in either layout.
  int kblock = 1;
  /// For a block of n rows (1 to kMaxPanelRows): gate_up on `panels` adjacent panels at once (up
  /// to side_by_side_panels(n)), each a memory stream of its own (one thread reads several
  /// streams faster than one). Panel p's weights start at wp + p * panel_bytes, its scales at
  /// quant.scales + p * scale_bytes, its hidden columns at col0 + p * hcols, and its raw sums
  /// (acc_in, acc_out) at p * n * 2L floats. Null where an instruction set has none (the caller
  /// then takes one panel at a time).
  void (*gate_up_panels)(const float* xp, const void* wp, int64_t panel_bytes, int panels,
                         int64_t d, int64_t n, float* hp, int64_t col0, int64_t hcols, int64_t f,
                         Act act, const float* acc_in, float* acc_out, Storage storage,
                         QuantArgs quant, int64_t scale_bytes) = nullptr;
  /// For a block of n rows: down on `panels` adjacent panels at once, panel p's weights at
  /// wp + p * panel_bytes and its scales at quant.scales + p * scale_bytes, into y's columns
  /// [col0 + 2L p, col0 + 2L (p + 1)) clipped to cols_end.
  void (*down_panels)(const float* hp, const void* wp, int64_t panel_bytes, int panels, int64_t f,
                      int64_t n, const int32_t* tokens, const float* weights, float* y, int64_t ldy,
                      int64_t col0, int64_t cols_end, Storage storage, QuantArgs quant,
                      int64_t scale_bytes) = nullptr;
  /// Takes q4 weights too, in the pair form of its own file (cpu_avx512_bf16.cpp, kpack 2), with
  /// bf16 activations: QuantArgs::group_sums then required at every row count.
  bool q4_pairs = false;
};

/// The index of the word of pair p and row r in a row block of R rows whose reduction has
/// `pairs` pairs, in the layout of IsaKernels::kblock.
constexpr int64_t pair_word(int64_t p, int64_t r, int64_t R, int64_t pairs, int64_t kblock) {
  if (kblock == 1 || p >= pairs / kblock * kblock) return p * R + r;
  return (p / kblock * R + r) * kblock + p % kblock;
}

const IsaKernels& generic_kernels();
const IsaKernels& avx2_kernels();
const IsaKernels& avx512_kernels();
const IsaKernels& avx512_bf16_kernels();
/// AMX-BF16 tiles (cpu_amx.cpp): the same pair layouts as avx512_bf16_kernels(), 16-row blocks.
const IsaKernels& amx_kernels();
/// The same kernels over a software model of the tiles, for tests on CPUs without AMX (they need
/// AVX-512 for the epilogues).
const IsaKernels& amx_model_kernels();

}  // namespace moe_bench::cpu
