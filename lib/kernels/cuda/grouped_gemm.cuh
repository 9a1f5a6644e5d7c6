// The grouped GEMM: one launch per projection over every expert's rows (WMMA 16x16x16 with FP32
// accumulation for bf16 and f16, FP32 SIMT for f32), the activation fused into the gate/up
// epilogue and the routing weight into the down epilogue.
#pragma once

#include <mma.h>

#include "cuda_support.cuh"

// Included only by the engine translation units (*.cu here); internal linkage in each.
namespace moe_bench::cuda {
namespace {

constexpr int kBN = 64;  // output columns per block (gated gate/up: 32 gate + 32 up)
constexpr int kBK = 32;  // reduction per shared-memory stage
constexpr int kThreads = 128;

template <typename T>
struct GroupB {
  const T* b;            ///< [n][k] row-major (k contiguous), one group after another
  int64_t group_stride;  ///< elements between groups' matrices
  int64_t n, k;          ///< padded columns and reduction
};

enum class Epi { kGateUp, kDown };

template <typename T>
struct GemmArgs {
  const T* a;
  int64_t lda;
  const int32_t* gather;  ///< row -> token of A (-1: zero row); null: row r of A is row r
  const int64_t* offsets;
  int experts, groups;
  GroupB<T> routed, shared;
  // gate/up epilogue: H[row, col] = act(gate, up) in T, zero beyond the valid width
  int act;
  bool gated;
  int64_t valid_routed, valid_shared;
  T* h;
  int64_t ldh;
  // down epilogue: O[row, col] = weight[row] * acc (FP32)
  float* o;
  int64_t ldo;
  const float* row_weight;
  const int32_t* row_token;  ///< row -> token (-1: padding row), for the row GEMV
};

template <typename T, int BM, Epi kEpi>
__global__ void __launch_bounds__(kThreads) grouped_gemm(GemmArgs<T> args) {
  constexpr int kLdc = kBN + 4;
  __shared__ __align__(32) float cs[BM * kLdc];
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * BM;
  const int64_t col0 = static_cast<int64_t>(blockIdx.x) * kBN;
  if (row0 >= args.offsets[args.groups]) return;  // the grid covers the most rows possible
  const int g = group_of_row(args.offsets, args.groups, row0);
  const bool is_shared = g >= args.experts;
  const GroupB<T>& gb = is_shared ? args.shared : args.routed;
  if (col0 >= gb.n) return;
  const T* b = gb.b + (is_shared ? 0 : g * gb.group_stride) + col0 * gb.k;
  const int tid = threadIdx.x;

  // Row pointers of this block's A rows (gathered tokens or plain rows).
  auto a_row = [&](int r) -> const T* {
    const int64_t row = row0 + r;
    if (args.gather == nullptr) return args.a + row * args.lda;
    const int32_t token = args.gather[row];
    return token >= 0 ? args.a + static_cast<int64_t>(token) * args.lda : nullptr;
  };

  if constexpr (std::is_same_v<T, float>) {
    // FP32 SIMT: thread = one column, BM/2 rows (two row phases of 64 threads).
    __shared__ float as[BM][kBK + 1];
    __shared__ float bs[kBN][kBK + 1];
    const int c = tid % kBN, phase = tid / kBN;
    float acc[BM / 2];
#pragma unroll
    for (int i = 0; i < BM / 2; ++i) acc[i] = 0.0f;
    for (int64_t k0 = 0; k0 < gb.k; k0 += kBK) {
      for (int v = tid; v < BM * kBK; v += kThreads) {
        const int r = v / kBK, kk = v % kBK;
        const T* src = a_row(r);
        as[r][kk] = src != nullptr ? src[k0 + kk] : 0.0f;
      }
      for (int v = tid; v < kBN * kBK; v += kThreads) {
        const int n = v / kBK, kk = v % kBK;
        bs[n][kk] = b[n * gb.k + k0 + kk];
      }
      __syncthreads();
#pragma unroll 8
      for (int kk = 0; kk < kBK; ++kk) {
        const float bv = bs[c][kk];
#pragma unroll
        for (int i = 0; i < BM / 2; ++i) acc[i] += as[phase + 2 * i][kk] * bv;
      }
      __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < BM / 2; ++i) cs[(phase + 2 * i) * kLdc + c] = acc[i];
  } else {
    // Tensor cores: warps tile BM x 64 as (BM/16) x (4 / (BM/16)), 16x16x16 fragments.
    using namespace nvcuda;
    constexpr int kLds = kBK + 8;  // 16-byte multiple, staggers banks
    constexpr int kWm = BM / 16, kWn = 4 / kWm, kFn = kBN / kWn / 16;
    __shared__ __align__(32) T as[BM * kLds];
    __shared__ __align__(32) T bs[kBN * kLds];
    const int warp = tid / 32, wm = warp / kWn, wn = warp % kWn;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[kFn];
#pragma unroll
    for (int f = 0; f < kFn; ++f) wmma::fill_fragment(acc[f], 0.0f);
    constexpr int kVec = 8;  // 16 bytes of 16-bit values
    for (int64_t k0 = 0; k0 < gb.k; k0 += kBK) {
      for (int v = tid; v < BM * kBK / kVec; v += kThreads) {
        const int r = v / (kBK / kVec), c8 = v % (kBK / kVec) * kVec;
        const T* src = a_row(r);
        uint4 val = make_uint4(0, 0, 0, 0);
        if (src != nullptr) val = *reinterpret_cast<const uint4*>(src + k0 + c8);
        *reinterpret_cast<uint4*>(&as[r * kLds + c8]) = val;
      }
      for (int v = tid; v < kBN * kBK / kVec; v += kThreads) {
        const int n = v / (kBK / kVec), c8 = v % (kBK / kVec) * kVec;
        *reinterpret_cast<uint4*>(&bs[n * kLds + c8]) =
            *reinterpret_cast<const uint4*>(b + n * gb.k + k0 + c8);
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < kBK; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
        wmma::load_matrix_sync(fa, as + wm * 16 * kLds + kk, kLds);
#pragma unroll
        for (int f = 0; f < kFn; ++f) {
          wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb;
          wmma::load_matrix_sync(fb, bs + (wn * kFn * 16 + f * 16) * kLds + kk, kLds);
          wmma::mma_sync(acc[f], fa, fb, acc[f]);
        }
      }
      __syncthreads();
    }
#pragma unroll
    for (int f = 0; f < kFn; ++f) {
      wmma::store_matrix_sync(cs + wm * 16 * kLdc + wn * kFn * 16 + f * 16, acc[f], kLdc,
                              wmma::mem_row_major);
    }
  }
  __syncthreads();

  if constexpr (kEpi == Epi::kGateUp) {
    const int64_t valid = is_shared ? args.valid_shared : args.valid_routed;
    if (args.gated) {
      // Columns [0, 32) of the block are gate rows, [32, 64) the up rows of the same units.
      constexpr int kHalf = kBN / 2;
      for (int v = tid; v < BM * kHalf; v += kThreads) {
        const int r = v / kHalf, j = v % kHalf;
        const int64_t col = hidden_column(blockIdx.x, j, true, kBN);
        const float h = activate(args.act, cs[r * kLdc + j], cs[r * kLdc + kHalf + j]);
        args.h[(row0 + r) * args.ldh + col] = to_elem<T>(col < valid ? h : 0.0f);
      }
    } else {
      for (int v = tid; v < BM * kBN; v += kThreads) {
        const int r = v / kBN, j = v % kBN;
        const int64_t col = hidden_column(blockIdx.x, j, false, kBN);
        const float h = activate(args.act, cs[r * kLdc + j], 0.0f);
        args.h[(row0 + r) * args.ldh + col] = to_elem<T>(col < valid ? h : 0.0f);
      }
    }
  } else {
    for (int v = tid; v < BM * kBN; v += kThreads) {
      const int r = v / kBN, j = v % kBN;
      args.o[(row0 + r) * args.ldo + col0 + j] = args.row_weight[row0 + r] * cs[r * kLdc + j];
    }
  }
}

}  // namespace
}  // namespace moe_bench::cuda
