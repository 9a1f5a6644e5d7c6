#include "paths.hpp"

namespace moe_bench::testing {

const char* const kToolPath = MOE_BENCH_EXE;
const char* const kGoldenDir = MOE_BENCH_GOLDEN_DIR;
const char* const kSourceDir = MOE_BENCH_SOURCE_DIR;

}  // namespace moe_bench::testing
