// The a8 micro-kernels (`cpu_w8a8`): int8 or q4 weights times activations quantized to int8
// per row, as integer dot products (AVX2: vpmaddubsw and vpmaddwd; a portable twin), with the
// weights' scales, the row's scale and the activation applied to the integer sums (AVX-512 VNNI:
// vpdpbusd). Layouts:
// - a panel is kA8Cols output columns of one or two projections (gate/up gated: W1 and W3; GELU:
//   W1; down: W2), packed along the reduction in steps of 4 rows ("quads");
// - int8: for each quad, per projection, 32 bytes: column c's four codes at bytes 4c..4c+3
//   (signed, or as code + 128 where A8Kernels::i8_unsigned); after the last quad, per
//   projection, the kA8Cols f32 scales;
// - q4: for each group of kQ4Rows reduction rows, per projection, 4 x 32 bytes (vector v: byte
//   4c + i holds row 8v + i of column c in its low nibble and row 8v + 4 + i in its high one,
//   as code + 8), then per projection the kA8Cols f16 scales of the group;
// - columns past the matrix's rows have zero codes (q4: code 0, stored 8) and zero scales, and
//   int8 reductions are zero padded to whole quads.
#pragma once

#include <cstdint>

#include "cpu_isa.hpp"

namespace moe_bench::cpu {

/// Output columns of an a8 panel on every instruction set (one AVX2 vector of int32 sums).
constexpr int kA8Cols = 8;
/// Rows of a block at most (cpu_kernel.hpp's kMaxRows).
constexpr int kA8MaxRows = 16;

/// Bytes of one packed panel of `projections` projections reducing over `len` rows.
constexpr int64_t a8_panel_bytes(bool q4, int projections, int64_t len) {
  return q4 ? len / kQ4Rows * projections * (4 * 32 + 2 * kA8Cols)
            : (len + 3) / 4 * projections * 32 + projections * 4 * kA8Cols;
}

/// A block's activation rows quantized to int8: row r's codes (zero padded to whole quads), their
/// magnitudes (int8 weights on AVX2 multiply |x| by the weight with x's sign, since vpmaddubsw
/// takes one unsigned operand), the sum of all its codes (int8 weights stored unsigned), the sums
/// of each group of kQ4Rows codes (q4), and its scale. What a kernel does not read may be null.
/// Rows held as 15-bit integers (`cpu` with bf16 activations, hold_as_int15: "a16") have `low`:
/// codes holds each value's high byte and low its low seven bits, group_sums each group's sum of
/// the integers and group_scales its power of two; their scale is 1.
struct A8Rows {
  const int8_t* codes[kA8MaxRows];
  const uint8_t* magnitudes[kA8MaxRows];
  int32_t code_sum[kA8MaxRows];
  const int32_t* group_sums[kA8MaxRows];
  float scale[kA8MaxRows];
  const int8_t* low[kA8MaxRows];
  const float* group_scales[kA8MaxRows];
};

struct A8Kernels {
  const char* name;
  /// int8 weights are packed as code + 128 (unsigned bytes, the operand vpdpbusd takes unsigned),
  /// and the kernels take 128 x the row's code sum off; they read no magnitudes. Otherwise signed.
  bool i8_unsigned;
  /// Hidden columns [col0, col0 + kA8Cols x panels) clipped to f, of rows [0, n) of x, from
  /// `panels` adjacent gate/up panels at wp reducing over d: act(W1 x, W3 x), or GELU(W1 x)
  /// with one projection a panel. Written in FP32 to h[r * ldh + column].
  void (*gate_up)(const A8Rows& x, int n, const char* wp, int panels, int64_t d, bool q4, Act act,
                  float* h, int64_t ldh, int64_t col0, int64_t f);
  /// y[tokens[r] * ldy + c] += weights[r] * (W2 h_r)[c] for the output columns of `panels`
  /// adjacent down panels at wp, [col0, col0 + kA8Cols x panels) clipped to cols_end, r < n.
  void (*down)(const A8Rows& h, int n, const char* wp, int panels, int64_t f, bool q4,
               const int32_t* tokens, const float* weights, float* y, int64_t ldy, int64_t col0,
               int64_t cols_end);
  /// Rows held as 15-bit integers (A8Rows::low): gate_up takes them, and this is down's
  /// contract for them. Null where the instruction set has no such kernels (only VNNI has).
  void (*down_a16)(const A8Rows& h, int n, const char* wp, int panels, int64_t f, bool q4,
                   const int32_t* tokens, const float* weights, float* y, int64_t ldy, int64_t col0,
                   int64_t cols_end);
  /// v[len] rounded to bf16 and held as 15-bit integers a group of kQ4Rows: hi, lo, and each
  /// group's sum and power of two, the bits of hold_a16_generic. Null with down_a16.
  void (*hold_a16)(const float* v, int64_t len, int8_t* hi, int8_t* lo, int32_t* sums,
                   float* scales);
};

/// Each group of kQ4Rows values of v[len] rounded to bf16, then held by hold_as_int15 (quant.hpp).
void hold_a16_generic(const float* v, int64_t len, int8_t* hi, int8_t* lo, int32_t* sums,
                      float* scales);

/// Rows [0, n) of a block in passes of kPass rows (2 to 4) and the rows left in one more pass:
/// pass.template operator()<NR>(r) for each, NR its rows from row r.
template <int kPass, typename Pass>
inline void for_each_pass(int n, Pass&& pass) {
  static_assert(kPass >= 2 && kPass <= 4);
  int r = 0;
  for (; r + kPass <= n; r += kPass) pass.template operator()<kPass>(r);
  switch (n - r) {
    case 3:
      if constexpr (kPass > 3) pass.template operator()<3>(r);
      break;
    case 2:
      if constexpr (kPass > 2) pass.template operator()<2>(r);
      break;
    case 1:
      pass.template operator()<1>(r);
      break;
    default:
      break;
  }
}

const A8Kernels& a8_generic_kernels();
/// AVX2 (vpmaddubsw, vpmaddwd, F16C): wherever the CPU has AVX2, AVX-512 CPUs included.
const A8Kernels& a8_avx2_kernels();
/// AVX-512 VNNI (vpdpbusd, with AVX-512 BW/VL and F16C): where the CPU has avx512_vnni.
const A8Kernels& a8_vnni_kernels();

}  // namespace moe_bench::cpu
