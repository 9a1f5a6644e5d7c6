#pragma once

#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "moe_bench/harness.hpp"
#include "moe_bench/result.hpp"

namespace moe_bench {

/// The version of the line protocol between `compare --against` and its workers; a worker that
/// answers another version (an older build) is refused with that reason.
inline constexpr int kWorkerProtocol = 4;
/// The oldest version still understood: 3 has no `inputs` line (the data are then not compared).
inline constexpr int kOldestWorkerProtocol = 3;

/// A deliberate slowdown of one implementation (tests and the gate's calibration only): each
/// sample of `impl` spins for `fraction` of its measured time more.
struct InjectedSlowdown {
  std::string impl;
  double fraction = 0;
};

/// The worker side of a side-by-side comparison (`moe-bench worker`): holds one case's
/// implementations ready and runs one sample whenever asked, on these lines from `in`:
///   `case I L CPU`  prepare case I rotating L cold layers (the driver chooses L, so that both
///                   builds run under the same cache conditions whatever their own policy), on
///                   logical CPU `CPU` alone when the case runs one thread (-1: anywhere), so
///                   that a neighbour busy on one core slows both builds alike:
///                   answers `inputs FINGERPRINT` (the problem's, in hex: the driver refuses
///                   to compare builds that generated different data), then
///                   `impl NAME ok INNER_REPS MAX_REL_ERR TOLERANCE` or
///                   `impl NAME failed|skipped REASON` per implementation, then `ready L LABEL`
///   `sample NAME`   one sample of NAME: answers its seconds per call
///   `quit`          ends (as does the end of `in`)
/// The first line it writes is `moe-bench-worker PROTOCOL CASES`. Returns the exit code.
int serve_worker(const std::vector<Case>& cases, const std::vector<std::string>& impls,
                 const HarnessOptions& options, const InjectedSlowdown& slowdown, std::FILE* in,
                 std::FILE* out);

struct SideBySideOptions {
  std::string old_binary;                ///< the reference build's moe-bench
  std::string new_binary;                ///< this build's moe-bench
  std::vector<std::string> worker_args;  ///< the case flags both workers get
  std::vector<std::string> impls;        ///< the implementations those flags name
  InjectedSlowdown slowdown;             ///< applied to the new build only
  std::vector<size_t> only;              ///< the indices of the cases to run; empty: every case
};

/// Runs every case in two worker processes, the old and the new build, taking samples of each
/// implementation in both alternately, in a seeded random order per round, so that drift of the
/// machine hits both alike. Returns the old and the new build's results as two reports.
/// Throws EnvironmentError when a worker cannot start, speaks another protocol or dies.
std::pair<Report, Report> run_side_by_side(const std::vector<Case>& cases,
                                           const HarnessOptions& options,
                                           const SideBySideOptions& sbs,
                                           const ProgressFn& progress = {});

}  // namespace moe_bench
