#include "moe_bench/roofline.hpp"

#include <fmt/format.h>
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <type_traits>
#include <vector>

#include "moe_bench/aligned.hpp"
#include "moe_bench/amx_config.hpp"
#include "moe_bench/sysinfo.hpp"

namespace moe_bench {
namespace {

using Clock = std::chrono::steady_clock;

// Independent FMA chains, enough to cover the FMA latency on two pipes (4 cycles x 2 pipes = 8
// in flight on Zen and Skylake), and few enough that the chains and the two constants stay in
// registers: 16 + 2 of the 32 zmm registers of AVX-512, 12 + 2 of the 16 ymm (AVX2) or xmm
// (SSE) registers. Sixteen chains on AVX2 spill to the stack and measured half the peak of an
// AMD Zen 3 (issue 25).
constexpr int kChainsAvx512 = 16;
constexpr int kChains16Regs = 12;

// GCC ignores vector_size on a dependent type, so the widths are spelled out.
typedef float V16 __attribute__((vector_size(16)));
typedef float V32 __attribute__((vector_size(32)));
typedef float V64 __attribute__((vector_size(64)));
// Integer lanes for reading bytes that are not floats (read_bytes): packed weights seen as floats
// would include subnormals, whose additions some CPUs take slow paths for.
typedef uint32_t I16 __attribute__((vector_size(16)));
typedef uint32_t I32 __attribute__((vector_size(32)));
typedef uint32_t I64 __attribute__((vector_size(64)));

// The peak loops are register-only arithmetic on a local array of fixed size. Under the
// sanitizers that array lived in memory with every access checked: a Debug run spent 80% of its
// time here (3 s of 4), for peaks a Debug build does not stand behind. They are left unsanitized.
#define MOE_BENCH_PEAK_LOOP noinline, no_sanitize("address", "undefined")

// Explicit FMA instructions: in ISO C++ mode GCC does not contract a * b + c into an FMA.

__attribute__((target("avx512f"), MOE_BENCH_PEAK_LOOP)) float fma_avx512(int64_t iterations,
                                                                         float seed) {
  constexpr int kChains = kChainsAvx512;
  __m512 acc[kChains];
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  for (int c = 0; c < kChains; ++c) acc[c] = _mm512_set1_ps(seed + static_cast<float>(c));
  for (int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 16
    for (int c = 0; c < kChains; ++c) acc[c] = _mm512_fmadd_ps(acc[c], a, b);
  }
  __m512 sum = acc[0];
  for (int c = 1; c < kChains; ++c) sum = _mm512_add_ps(sum, acc[c]);
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, sum);
  float out = 0;
  for (float l : lanes) out += l;
  return out;
}

__attribute__((target("avx2,fma"), MOE_BENCH_PEAK_LOOP)) float fma_avx2(int64_t iterations,
                                                                        float seed) {
  constexpr int kChains = kChains16Regs;
  __m256 acc[kChains];
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  for (int c = 0; c < kChains; ++c) acc[c] = _mm256_set1_ps(seed + static_cast<float>(c));
  for (int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 16
    for (int c = 0; c < kChains; ++c) acc[c] = _mm256_fmadd_ps(acc[c], a, b);
  }
  __m256 sum = acc[0];
  for (int c = 1; c < kChains; ++c) sum = _mm256_add_ps(sum, acc[c]);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, sum);
  float out = 0;
  for (float l : lanes) out += l;
  return out;
}

// The x86-64 baseline (SSE2) has no FMA: a multiply and an add per lane, two flops, in separate
// instructions on separate pipes.
__attribute__((MOE_BENCH_PEAK_LOOP)) float fma_generic(int64_t iterations, float seed) {
  constexpr int kChains = kChains16Regs;
  V16 acc[kChains];
  const V16 a = {0.999999f, 0.999999f, 0.999999f, 0.999999f}, b = {1e-7f, 1e-7f, 1e-7f, 1e-7f};
  for (int c = 0; c < kChains; ++c) acc[c] = V16{} + (seed + static_cast<float>(c));
  for (int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 16
    for (int c = 0; c < kChains; ++c) acc[c] = acc[c] * a + b;
  }
  float out = 0;
  for (int c = 0; c < kChains; ++c) out += acc[c][0] + acc[c][1] + acc[c][2] + acc[c][3];
  return out;
}

// The same with vdpbf16ps: each instruction takes 16 lanes of bf16 pairs, 64 flops.
__attribute__((target("avx512f,avx512bf16"), MOE_BENCH_PEAK_LOOP)) float dpbf16_avx512(
    int64_t iterations, float seed) {
  constexpr int kChains = kChainsAvx512;
  __m512 acc[kChains];
  const __m512i one_pair = _mm512_set1_epi32(0x3f803f80);   // (1.0, 1.0) in bf16
  const __m512i tiny_pair = _mm512_set1_epi32(0x33d633d6);  // (~1e-7, ~1e-7)
  __m512bh a, b;
  __builtin_memcpy(&a, &one_pair, sizeof a);
  __builtin_memcpy(&b, &tiny_pair, sizeof b);
  for (int c = 0; c < kChains; ++c) acc[c] = _mm512_set1_ps(seed + static_cast<float>(c));
  for (int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 16
    for (int c = 0; c < kChains; ++c) acc[c] = _mm512_dpbf16_ps(acc[c], a, b);
  }
  __m512 sum = acc[0];
  for (int c = 1; c < kChains; ++c) sum = _mm512_add_ps(sum, acc[c]);
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, sum);
  float out = 0;
  for (float l : lanes) out += l;
  return out;
}

// TDPBF16PS: a 16 x 32 bf16 tile times a 32 x 16 bf16 tile into a 16 x 16 FP32 tile, 16384
// flops an instruction. Four independent accumulators (C = tiles 0-3, from A tiles 4-5 and B
// tiles 6-7) cover its latency. The configuration is the one the AMX kernels load
// (kAmxTileConfig), so a thread that ran this loop still holds theirs; the tiles are not released
// for the same reason. GCC's tile intrinsics are asm without a memory clobber:
// the barriers keep the buffer writes before the loads and the read after the store.
constexpr int kAmxFlopsPerIteration = 4 * 16 * 16 * 32 * 2;
__attribute__((target("amx-tile,amx-bf16"), MOE_BENCH_PEAK_LOOP)) float tdpbf16_amx(
    int64_t iterations, float seed) {
  _tile_loadconfig(&kAmxTileConfig);
  alignas(64) uint16_t ones[16 * 32], tiny[16 * 32];
  alignas(64) float out[16 * 16];
  for (int i = 0; i < 16 * 32; ++i) {
    ones[i] = 0x3f80;  // 1.0 in bf16
    tiny[i] = 0x33d6;  // ~1e-7
  }
  out[0] = seed;
  asm volatile("" ::: "memory");
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  _tile_loadd(4, ones, 64);
  _tile_loadd(5, tiny, 64);
  _tile_loadd(6, ones, 64);
  _tile_loadd(7, tiny, 64);
  for (int64_t i = 0; i < iterations; ++i) {
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, out, 64);
  asm volatile("" ::: "memory");
  return out[0] + seed;
}

// Best of five timings of `loop` on every thread; `flops_per_iteration` over all its chains.
double best_gflops(int threads, float (*loop)(int64_t, float), int flops_per_iteration,
                   int64_t iterations = 8'000'000) {
  double best = 0;
  volatile float sink = 0;
  // Best of five: the first ones may run before the clock has ramped up.
  for (int rep = 0; rep < 5; ++rep) {
    auto start = Clock::now();
#pragma omp parallel num_threads(threads)
    sink = sink + loop(iterations, static_cast<float>(omp_get_thread_num()));
    const double s = std::chrono::duration<double>(Clock::now() - start).count();
    const double flops =
        static_cast<double>(flops_per_iteration) * static_cast<double>(iterations) * threads;
    best = std::max(best, flops / s * 1e-9);
  }
  return best;
}

double fma_gflops(int threads, std::string& isa) {
  const CpuFeatures& f = cpu_features();
  if (f.has("avx512f")) {
    isa = "avx512";
    return best_gflops(threads, fma_avx512, 2 * 16 * kChainsAvx512);
  }
  if (f.has("avx2") && f.has("fma")) {
    isa = "avx2";
    return best_gflops(threads, fma_avx2, 2 * 8 * kChains16Regs);
  }
  isa = "generic";
  return best_gflops(threads, fma_generic, 2 * 4 * kChains16Regs);
}

// Element i of p read as a lane of V (float, or an integer lane for read_bytes).
template <typename V>
float lane_at(const float* p, int64_t i) {
  std::remove_cvref_t<decltype(V{}[0])> v;
  __builtin_memcpy(&v, p + i, sizeof(v));
  return static_cast<float>(v);
}

// Reads n floats as kStreams interleaved sequential streams: more streams in flight keep more of
// the hardware prefetchers busy (8 streams read ~10% faster than one here).
// The loops are inlined into the wrappers below, whose target attribute (avx512f, avx2) then
// compiles them: a function GCC calls keeps the file's own target, and when these loops were
// called (noinline), every ISA's loop read through 16-byte SSE loads (found on an Intel Xeon,
// 2026-12-07, in their disassembly: no ymm or zmm register).
constexpr int64_t kStreams = 8;

template <typename V, int kBytes = sizeof(V)>
__attribute__((always_inline)) inline float read_loop(const float* p, int64_t n) {
  constexpr int64_t kLanes = kBytes / 4;
  const int64_t per = n / kStreams / (4 * kLanes) * (4 * kLanes);
  V acc[4] = {};
  for (int64_t i = 0; i < per; i += 4 * kLanes) {
#pragma GCC unroll 8
    for (int64_t s = 0; s < kStreams; ++s) {
#pragma GCC unroll 4
      for (int64_t a = 0; a < 4; ++a) {
        V v;
        __builtin_memcpy(&v, p + s * per + i + a * kLanes, sizeof(V));
        acc[a] += v;
      }
    }
  }
  float out = 0;
  for (int64_t i = per * kStreams; i < n; ++i) out += lane_at<V>(p, i);
  for (int64_t a = 0; a < 4; ++a) {
    for (int64_t l = 0; l < kLanes; ++l) out += static_cast<float>(acc[a][l]);
  }
  return out;
}

// S contiguous streams side by side, each with software prefetch 32 lines ahead: the way the cpu
// kernels stream a thread's weight panels (kernel_body.hpp), one panel at a time (S = 1) or
// several side by side (S = 4, at one row: side_by_side_panels). Where one reads faster than the
// interleaved streams, it is the ceiling those kernels are held to.
template <typename V, int64_t S = 1>
__attribute__((always_inline)) inline float read_prefetched(const float* p, int64_t n) {
  // Every float is read: a cache line (16 floats) per step as 16 / lanes vectors, with one
  // prefetch per line 32 lines ahead. (An earlier version loaded one vector per 64 floats, which
  // touched a quarter of the lines at 16 lanes and a sixteenth at 4, yet counted every byte.)
  constexpr int64_t kLanes = sizeof(V) / 4, kLine = 16, kAhead = 32 * kLine;
  constexpr int64_t kPerLine = kLine / kLanes;
  const int64_t per = S == 1 ? n : n / S / (4 * kLine) * (4 * kLine);  // floats a stream
  V acc[4] = {};
  int64_t i = 0;
  for (; i + 4 * kLine <= per; i += 4 * kLine) {
#pragma GCC unroll 4
    for (int64_t a = 0; a < 4; ++a) {
#pragma GCC unroll 4
      for (int64_t s = 0; s < S; ++s) {
        const float* line = p + s * per + i + a * kLine;
        __builtin_prefetch(line + kAhead);
#pragma GCC unroll 4
        for (int64_t v = 0; v < kPerLine; ++v) {
          V x;
          __builtin_memcpy(&x, line + v * kLanes, sizeof(V));
          acc[a] += x;
        }
      }
    }
  }
  float out = 0;
  for (int64_t s = 0; s < S; ++s) {
    for (int64_t j = s * per + i; j < (s + 1) * per; ++j) out += lane_at<V>(p, j);
  }
  for (int64_t j = S * per; j < n; ++j) out += lane_at<V>(p, j);
  for (int64_t a = 0; a < 4; ++a) {
    for (int64_t l = 0; l < kLanes; ++l) out += static_cast<float>(acc[a][l]);
  }
  return out;
}

__attribute__((target("avx512f"))) float read_avx512(const float* p, int64_t n) {
  return read_loop<V64>(p, n);
}
__attribute__((target("avx512f"))) float read_prefetched_avx512(const float* p, int64_t n) {
  return read_prefetched<V64>(p, n);
}
__attribute__((target("avx512f"))) float read_streams_avx512(const float* p, int64_t n) {
  return read_prefetched<V64, 4>(p, n);
}
__attribute__((target("avx2"))) float read_avx2(const float* p, int64_t n) {
  return read_loop<V32>(p, n);
}
__attribute__((target("avx2"))) float read_prefetched_avx2(const float* p, int64_t n) {
  return read_prefetched<V32>(p, n);
}
__attribute__((target("avx2"))) float read_streams_avx2(const float* p, int64_t n) {
  return read_prefetched<V32, 4>(p, n);
}
float read_generic(const float* p, int64_t n) { return read_loop<V16>(p, n); }
float read_prefetched_generic(const float* p, int64_t n) { return read_prefetched<V16>(p, n); }
float read_streams_generic(const float* p, int64_t n) { return read_prefetched<V16, 4>(p, n); }

// The same loops on integer lanes, for read_bytes.
// One pattern on integer lanes I, inlined into the wrappers below (compiled for their ISA).
template <typename I>
__attribute__((always_inline)) inline float read_words(const float* p, int64_t n,
                                                       ReadPattern pattern) {
  switch (pattern) {
    case ReadPattern::kInterleaved:
      return read_loop<I>(p, n);
    case ReadPattern::kPrefetched:
      return read_prefetched<I>(p, n);
    case ReadPattern::kPrefetchedStreams:
      return read_prefetched<I, 4>(p, n);
  }
  return 0;
}
__attribute__((target("avx512f"))) float read_words_avx512(const float* p, int64_t n,
                                                           ReadPattern pattern) {
  return read_words<I64>(p, n, pattern);
}
__attribute__((target("avx2"))) float read_words_avx2(const float* p, int64_t n,
                                                      ReadPattern pattern) {
  return read_words<I32>(p, n, pattern);
}
float read_words_generic(const float* p, int64_t n, ReadPattern pattern) {
  return read_words<I16>(p, n, pattern);
}

// Best of five passes of `loop` over the buffer, every thread reading its own contiguous part.
double best_read(const float* buf, int64_t n, int threads, float (*loop)(const float*, int64_t)) {
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    float total = 0;
    auto start = Clock::now();
#pragma omp parallel num_threads(threads) reduction(+ : total)
    {
      const int64_t chunk = (n + omp_get_num_threads() - 1) / omp_get_num_threads();
      const int64_t begin = std::min(n, chunk * omp_get_thread_num());
      total += loop(buf + begin, std::min(chunk, n - begin));
    }
    const double s = std::chrono::duration<double>(Clock::now() - start).count();
    volatile float sink = total;
    (void)sink;
    best = std::max(best, static_cast<double>(n) * sizeof(float) / s * 1e-9);
  }
  return best;
}

double read_gbytes_per_s(int threads) {
  // Four times the last-level cache, at least 256 MiB, so the reads stream from memory.
  const int64_t bytes = std::max<int64_t>(256 << 20, 4 * last_level_cache_bytes());
  const int64_t n = bytes / static_cast<int64_t>(sizeof(float));
  // On 2 MiB pages, as the cpu kernels' packed weights are (Aligned): in a VM with nested paging,
  // streaming through 4 KiB pages read half as fast here (35 against 70 GB/s on an AMD Zen 5
  // guest), so a ceiling on small pages sat below what the kernels reach (issue 25).
  Aligned<float> buf;
  buf.resize(n);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t i = 0; i < n; ++i) buf.data()[i] = 1.0f;
  // Both patterns on every ISA: on an AMD Zen 5 capped at avx2 the interleaved streams alone read
  // 34 GB/s where the prefetched stream (and the avx2 kernels) read 60 (issue 25).
  // And four prefetched streams a thread, as `cpu` reads side-by-side panels at one row: on an
  // Intel Xeon (AVX-512) it read f32 decode faster than the two patterns above.
  if (cpu_features().has("avx512f")) {
    return std::max({best_read(buf.data(), n, threads, read_avx512),
                     best_read(buf.data(), n, threads, read_prefetched_avx512),
                     best_read(buf.data(), n, threads, read_streams_avx512)});
  }
  if (cpu_features().has("avx2")) {
    return std::max({best_read(buf.data(), n, threads, read_avx2),
                     best_read(buf.data(), n, threads, read_prefetched_avx2),
                     best_read(buf.data(), n, threads, read_streams_avx2)});
  }
  return std::max({best_read(buf.data(), n, threads, read_generic),
                   best_read(buf.data(), n, threads, read_prefetched_generic),
                   best_read(buf.data(), n, threads, read_streams_generic)});
}

}  // namespace

const char* to_string(ReadPattern pattern) {
  switch (pattern) {
    case ReadPattern::kInterleaved:
      return "eight interleaved streams a thread";
    case ReadPattern::kPrefetched:
      return "one prefetched stream a thread";
    case ReadPattern::kPrefetchedStreams:
      return "four prefetched streams a thread";
  }
  return "";
}

float read_bytes(const char* p, int64_t bytes, ReadPattern pattern) {
  // The loops read floats through memcpy: any alignment, and the values are only summed.
  const auto* f = reinterpret_cast<const float*>(p);
  const int64_t n = bytes / static_cast<int64_t>(sizeof(float));
  if (cpu_features().has("avx512f")) return read_words_avx512(f, n, pattern);
  if (cpu_features().has("avx2")) return read_words_avx2(f, n, pattern);
  return read_words_generic(f, n, pattern);
}

double dpbf16_over_fma_rate() {
  // Measured once per process where the CPU has vdpbf16ps; 0 under a cap without it.
  if (!cpu_features().has("avx512f") || !cpu_features().has("avx512_bf16")) return 0.0;
  static const double kRatio = [] {
    // One thread, a tenth of the peaks' iterations: about 20 ms, once per process.
    return best_gflops(1, dpbf16_avx512, 64 * kChainsAvx512, 800'000) /
           best_gflops(1, fma_avx512, 32 * kChainsAvx512, 800'000);
  }();
  return kRatio;
}

Peaks measure_peaks(int threads) {
  Peaks p;
  p.threads = threads;
  p.fp32_gflops = fma_gflops(threads, p.fma_isa);
  if (cpu_features().has("avx512f") && cpu_features().has("avx512_bf16")) {
    p.bf16_gflops = best_gflops(threads, dpbf16_avx512, 64 * kChainsAvx512);
  }
  if (amx_refusal().empty()) {
    p.amx_gflops = best_gflops(threads, tdpbf16_amx, kAmxFlopsPerIteration, 200'000);
  }
  p.read_gbytes_per_s = read_gbytes_per_s(threads);
  return p;
}

RooflinePoint roofline(double flops, double bytes, double seconds, const DevicePeaks& peaks,
                       Dtype dtype) {
  RooflinePoint r;
  if (peaks.copy_gbytes_per_s <= 0) return r;
  const double compute_s =
      dtype != Dtype::kF32 && peaks.bf16_tflops > 0 ? flops / (peaks.bf16_tflops * 1e12) : 0.0;
  const double memory_s = bytes / (peaks.copy_gbytes_per_s * 1e9);
  r.compute_bound = compute_s > memory_s;
  r.bound_s = std::max(compute_s, memory_s);
  r.percent = seconds > 0 ? r.bound_s / seconds * 100.0 : 0;
  return r;
}

void keep_higher(Peaks& peaks, const Peaks& again) {
  peaks.fp32_gflops = std::max(peaks.fp32_gflops, again.fp32_gflops);
  peaks.bf16_gflops = std::max(peaks.bf16_gflops, again.bf16_gflops);
  peaks.amx_gflops = std::max(peaks.amx_gflops, again.amx_gflops);
  peaks.read_gbytes_per_s = std::max(peaks.read_gbytes_per_s, again.read_gbytes_per_s);
}

std::string bf16_peak(const Peaks& peaks) {
  std::string out;
  if (peaks.bf16_gflops > 0) {
    out += fmt::format(", {:.1f} GFLOP/s BF16 dot product (avx512-bf16)", peaks.bf16_gflops);
  }
  if (peaks.amx_gflops > 0) {
    out += fmt::format(", {:.1f} GFLOP/s BF16 tiles (amx-bf16)", peaks.amx_gflops);
  }
  return out;
}

RooflinePoint roofline(double flops, double bytes, double seconds, const Peaks& peaks,
                       Dtype dtype) {
  RooflinePoint r;
  if (peaks.fp32_gflops <= 0 || peaks.read_gbytes_per_s <= 0) return r;
  const double compute_s = flops / (peaks.compute_gflops(dtype) * 1e9);
  const double memory_s = bytes / (peaks.read_gbytes_per_s * 1e9);
  r.compute_bound = compute_s >= memory_s;
  r.bound_s = std::max(compute_s, memory_s);
  r.percent = seconds > 0 ? r.bound_s / seconds * 100.0 : 0;
  return r;
}

}  // namespace moe_bench
