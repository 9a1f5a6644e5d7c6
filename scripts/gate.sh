#!/usr/bin/env bash
# The performance gate (README command 2 runs it; docs/checks.md says why it looks like this):
# builds the reference commit recorded in reports/reference/COMMIT, then measures it and this
# tree's Release build side by side in one run with `moe-bench compare --against`, and fails on a
# regression of the cpu kernels. Run after `cmake --workflow --preset release`.
set -euo pipefail
cd "$(dirname "$0")/.."
ref=$(tr -d '[:space:]' < reports/reference/COMMIT)
tool=${MOE_BENCH_GATE_TOOL:-build/release/apps/moe-bench/moe-bench}  # the build to judge
if ! git cat-file -e "${ref}^{commit}" 2>/dev/null; then
  echo "gate: reference commit ${ref} is not in this clone (a shallow clone?); fetch it to gate" >&2
  exit 3
fi
src=build/reference/src
if [ "$(cat build/reference/built 2>/dev/null || true)" != "$ref" ]; then
  rm -rf build/reference
  mkdir -p "$src"
  git archive "$ref" | tar -x -C "$src"
  # The gate needs only the CPU kernels: no tests, no CUDA.
  cmake -S "$src" -B build/reference/build -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DMOE_BENCH_TESTS=OFF -DMOE_BENCH_CUDA=OFF >/dev/null
  cmake --build build/reference/build --target moe-bench
  echo "$ref" > build/reference/built
fi
# One thread: two processes each running two OpenMP threads on this 2-core machine differ by up
# to 7% between runs of the same binary, one thread each by under 2% (docs/checks.md).
"$tool" compare --against build/reference/build/apps/moe-bench/moe-bench \
  --impl cpu --workload A,B --tokens 1,32 --dtype f32,bf16 --threads 1 --reps 20 --min-time 0.5 \
  --threshold 0.07 --blas-core auto --quiet --md build/gate.md --json build/gate.json "$@"
