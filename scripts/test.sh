#!/usr/bin/env bash
# README command 2 (and CI): install what is missing; configure, build and run the whole test
# suite in Release and again under ASan and UBSan; then the performance gate: validate --quick,
# compared with the committed reference relative to the blas baseline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake --workflow --preset release
cmake --workflow --preset debug
tool=build/release/apps/moe-bench/moe-bench
"$tool" validate --quick --quiet --json build/validate-quick.json --md build/validate-quick.md
"$tool" compare reports/reference/validate-quick.json build/validate-quick.json \
  --relative-to blas --threshold 0.5 --md build/compare-quick.md
