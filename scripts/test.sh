#!/usr/bin/env bash
# README command 2 (and CI): install what is missing; configure, build and run the whole test
# suite in Release and again under ASan and UBSan; validate --quick (correctness and the quick
# claims); then the performance gate: this build against the reference commit, side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake --workflow --preset release
cmake --workflow --preset debug
tool=build/release/apps/moe-bench/moe-bench
"$tool" validate --quick --quiet --json build/validate-quick.json --md build/validate-quick.md
bash scripts/gate.sh
