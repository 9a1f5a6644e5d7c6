// Built where CMake found no MPI: `run --ep` says what to install.
#include "ep.hpp"
#include "moe_bench/error.hpp"

namespace moe_bench::ep {

std::string unavailable_reason() {
  return "this build has no MPI (install openmpi-bin and libopenmpi-dev, then build again)";
}

Session::Session() { throw EnvironmentError(unavailable_reason()); }
Session::~Session() = default;
void Session::abort(const std::string& message, int) const { throw EnvironmentError(message); }
std::vector<std::string> resolve_exchanges(const std::vector<std::string>&) {
  throw EnvironmentError(unavailable_reason());
}
void quiet_barrier() {}
int default_threads(int) { return 1; }
void run_cases(const Session&, const std::vector<Case>&, const std::string&, const HarnessOptions&,
               const EpOptions&, Report&, const ProgressFn&) {
  throw EnvironmentError(unavailable_reason());
}

}  // namespace moe_bench::ep
