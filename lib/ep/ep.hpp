#pragma once

#include <string>
#include <vector>

#include "moe_bench/ep_model.hpp"
#include "moe_bench/harness.hpp"
#include "moe_bench/report.hpp"

// Expert parallelism over MPI (DESIGN.md, "Expert parallelism"): each rank holds T tokens of its
// own and the experts its placement gives it; a layer is route (local), dispatch (one all-to-all
// of counts and one MPI_Alltoallv of token records, or on one node writes into the other ranks'
// shared-memory windows), the experts on the rows received (Kernel::run_routed), and combine
// (the rows back the same way, the sum at the source).
namespace moe_bench::ep {

struct EpOptions {
  int ranks = 1;  ///< --ep N: the processes mpirun started
  /// Where experts live: contiguous, round-robin, load-aware; several are measured in turn.
  std::vector<std::string> placements = {"contiguous"};
  int replicas = -1;  ///< extra expert copies (-1: N for load-aware, else 0)
  /// How the exchanges move rows: "alltoallv" (MPI_Alltoallv, anywhere; DESIGN.md's stages),
  /// "window" (MPI shared-memory windows; every rank on one node), or "auto" (window where it
  /// can, else alltoallv); several are measured in turn (resolve_exchanges first).
  std::vector<std::string> exchanges = {"alltoallv"};
  std::vector<EpCalibration> model;  ///< --ep-model: every case's calibration (empty: none)
};

/// The case's calibration in `ep.model` (tokens and threads per rank as planned), or null.
inline const EpCalibration* calibration_for(const EpOptions& ep, const Case& c) {
  EpInfo planned;
  planned.tokens_per_rank = c.shape.tokens;
  planned.threads_per_rank = c.threads;
  return find_calibration(ep.model, c, planned);
}

/// MPI for the life of the object: initialised on construction (threads funneled: OpenMP runs
/// inside each rank), finalised on destruction.
class Session {
 public:
  Session();
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  int rank() const { return rank_; }
  int size() const { return size_; }
  /// Ends every rank at once after an error on this one: prints "rank R: message", then
  /// MPI_Abort (mpirun ends the others; none waits forever in a collective).
  [[noreturn]] void abort(const std::string& message, int code) const;

 private:
  int rank_ = 0, size_ = 1;
};

/// The exchanges the ranks will use for --ep-exchange `asked` ("window" or "alltoallv" each,
/// without repeats); every rank calls it and gets the same answer. Throws where one asked for is
/// unknown or cannot be had.
std::vector<std::string> resolve_exchanges(const std::vector<std::string>& asked);

/// Waits for every rank without spinning a core (ranks that sit out a measurement of rank 0's).
void quiet_barrier();

/// Whether this build has MPI ("" when it does, else why not).
std::string unavailable_reason();

/// Runs every case expert-parallel over the session's ranks with the implementation `impl`
/// (which must split routing from its experts); `--tokens` counts each rank's tokens. Every
/// rank takes part; rank 0's report holds the results (the outputs gathered and checked against
/// the FP64 oracle on N x T tokens, the stage times as maxima over ranks) and is the one to write.
/// Several placements or exchanges give a result each per case, measured in turn, and each is
/// compared with the first.
void run_cases(const Session& session, const std::vector<Case>& cases, const std::string& impl,
               const HarnessOptions& options, const EpOptions& ep, Report& report,
               const ProgressFn& progress);

/// The number of OpenMP threads each rank uses by default: the cores shared among the ranks.
int default_threads(int ranks);

}  // namespace moe_bench::ep
