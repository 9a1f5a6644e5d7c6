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

TEST_CASE("an ISA cap leaves what a CPU of that class reports") {
  const CpuFeatures amx = features({"sse2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f",
                                    "avx512bw", "avx512vl", "avx512dq", "avx512cd", "avx512_vnni",
                                    "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "bmi2"});
  CHECK(isa_of(amx) == Isa::kAmx);
  CHECK(isa_of(kAvx512Bf16) == Isa::kGeneric);  // no f16c: the avx2 kernels need it
  for (Isa cap : {Isa::kGeneric, Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Bf16, Isa::kAmx}) {
    INFO(to_string(cap));
    const CpuFeatures c = capped(amx, cap);
    CHECK(isa_of(c) == cap);
    CHECK(c.has("sse2"));
    CHECK(c.has("bmi2"));  // scalar extensions are not the cap's business
    CHECK(parse_isa(to_string(cap)) == cap);
  }
  const CpuFeatures avx2 = capped(amx, Isa::kAvx2);
  CHECK(avx2.has("fma"));
  CHECK_FALSE(avx2.has("avx_vnni"));  // an AVX2-class CPU (Haswell, Zen 3) has no AVX-VNNI
  CHECK_FALSE(avx2.has("avx512f"));
  CHECK_FALSE(capped(amx, Isa::kAvx512).has("avx512_bf16"));
  CHECK(capped(amx, Isa::kAvx512).has("avx512_vnni"));
  CHECK_FALSE(capped(amx, Isa::kAvx512Bf16).has("amx_tile"));
  CHECK_FALSE(capped(amx, Isa::kGeneric).has("avx"));
  CHECK_FALSE(parse_isa("avx3"));
  CHECK(parse_isa("AVX2") == Isa::kAvx2);
  CHECK(blas_core_for_cap(Isa::kAvx2) == "Haswell");
}

TEST_CASE("the cap in force changes the features everything dispatches on, and lifts") {
  const auto before = max_isa();
  set_max_isa(Isa::kGeneric);
  CHECK_FALSE(cpu_features().has("avx2"));
  CHECK(isa_cap_note().find("capped at generic") != std::string::npos);
  set_max_isa(std::nullopt);
  CHECK(cpu_features().flags == host_cpu_features().flags);
  CHECK(isa_cap_note().empty());
  CHECK(supported_isas().front() == Isa::kGeneric);
  CHECK(supported_isas().back() == isa_of(host_cpu_features()));
  set_max_isa(before);
}

TEST_CASE("the steal share is the steal jiffies over all jiffies between two readings") {
  CHECK(steal_share({1000, 10}, {2000, 60}) == Approx(0.05));
  CHECK(steal_share({1000, -1}, {2000, 60}) == -1);
  CHECK(steal_share({1000, 10}, {1000, 10}) == -1);
  const CpuTimes now = cpu_times();
  if (now.steal >= 0) CHECK(now.total > 0);
}
