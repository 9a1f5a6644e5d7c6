#include "python_peer.hpp"

namespace moe_bench::python {

const char* scripts_dir() { return MOE_BENCH_PYTHON_DIR; }

}  // namespace moe_bench::python
