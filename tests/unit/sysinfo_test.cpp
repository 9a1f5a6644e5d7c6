#include "moe_bench/sysinfo.hpp"

#include <catch2/catch.hpp>

using namespace moe_bench;

namespace {
CpuFeatures features(std::initializer_list<const char*> flags) {
  CpuFeatures f;
  for (const char* x : flags) f.flags.insert(x);
  return f;
}
const CpuFeatures kAvx512Bf16 = features(
    {"avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd", "avx512_bf16"});
}  // namespace

TEST_CASE("the best OpenBLAS kernel follows the CPU features") {
  CHECK(best_blas_core(kAvx512Bf16) == "Cooperlake");
  CHECK(best_blas_core(features({"avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq",
                                 "avx512cd"})) == "SkylakeX");
  CHECK(best_blas_core(features({"avx2", "fma"})) == "Haswell");
  CHECK(best_blas_core(features({"sse2"})).empty());
}

TEST_CASE("a fallback kernel is replaced, a user's choice is respected") {
  // OpenBLAS fell back to Prescott on a CPU with AVX-512: moe-bench asks for the best kernel.
  CHECK(blas_core_to_request(kAvx512Bf16, nullptr, nullptr, "Prescott") == "Cooperlake");
  // Detection already found the best kernel: nothing to do.
  CHECK_FALSE(blas_core_to_request(kAvx512Bf16, nullptr, nullptr, "Cooperlake"));
  // The user set OPENBLAS_CORETYPE: respected.
  CHECK_FALSE(blas_core_to_request(kAvx512Bf16, nullptr, "Haswell", "Haswell"));
  // --blas-core auto beats the environment; a named core is taken as asked.
  CHECK(blas_core_to_request(kAvx512Bf16, "auto", "Haswell", "Haswell") == "Cooperlake");
  CHECK(blas_core_to_request(kAvx512Bf16, "SkylakeX", nullptr, "Cooperlake") == "SkylakeX");
  CHECK_FALSE(blas_core_to_request(kAvx512Bf16, "SkylakeX", nullptr, "skylakex"));
}

TEST_CASE("kernel strength ranks fallbacks below the AVX-512 kernels") {
  CHECK(blas_core_weaker("Prescott", "SkylakeX"));
  CHECK(blas_core_weaker("Haswell", "Cooperlake"));
  CHECK_FALSE(blas_core_weaker("cooperlake", "SkylakeX"));
}
