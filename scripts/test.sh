#!/usr/bin/env bash
# README command 2 (and CI): install what is missing, then configure, build and run the whole
# test suite in Release, and the suite again under ASan and UBSan.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake --workflow --preset release
cmake --workflow --preset debug
