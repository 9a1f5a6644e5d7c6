// Where the tool under test, the golden files and the source tree are. They are compiled into
// paths.cpp alone, the one test unit that depends on where the checkout is, so that every other
// test unit is the same in every clone (ccache reuses it between clones; docs/checks.md).
#pragma once

namespace moe_bench::testing {

extern const char* const kToolPath;   ///< the moe-bench under test
extern const char* const kGoldenDir;  ///< tests/golden
extern const char* const kSourceDir;  ///< the source tree

}  // namespace moe_bench::testing
