#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "moe_bench/sysinfo.hpp"

int main(int argc, char** argv) {
  // The BLAS baseline is tested on the kernel the tool itself would use.
  moe_bench::prepare_process(argc, argv);
  return Catch::Session().run(argc, argv);
}
