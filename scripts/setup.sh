#!/usr/bin/env bash
# README command 1: install what is missing, build Release, run the tool's main job.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release
# The one-command check: correctness grid, the standard workloads timed with every result checked
# against the FP64 oracle, and the README's claims. validate always runs the BLAS baseline on the
# best OpenBLAS kernel for this CPU, even where a machine-wide OPENBLAS_CORETYPE pins a slower one
# (the report says which kernel ran and why).
exec build/release/apps/moe-bench/moe-bench validate "$@"
