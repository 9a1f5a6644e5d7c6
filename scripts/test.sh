#!/usr/bin/env bash
# README command 2 (and CI): install what is missing; configure, build and run the whole test
# suite in Release and again under ASan and UBSan; validate --quick (correctness and the quick
# claims), and again as an AVX2 machine would run it (--max-isa avx2: AVX2 is the class below
# every CPU this project meets, so every machine checks it); then the performance gate: this
# build against the reference commit, side by side. Plain CMake (the default generator) is
# configured once: the first command many users type.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake --workflow --preset release
cmake --workflow --preset debug
cmake -S . -B build/plain -DCMAKE_BUILD_TYPE=Release >/dev/null
tool=build/release/apps/moe-bench/moe-bench
"$tool" validate --quick --quiet --json build/validate-quick.json --md build/validate-quick.md
# Under the cap only where it changes something: on a CPU with neither AVX-512 nor AVX-VNNI (which
# the cap also drops) the run above was already that class's.
if grep -qwE "avx512f|avx_vnni" /proc/cpuinfo; then
  "$tool" validate --quick --quiet --max-isa avx2 --json build/validate-quick-avx2.json \
    --md build/validate-quick-avx2.md
else
  echo "test.sh: no AVX-512 or AVX-VNNI here: validate --quick above ran as an AVX2 CPU would"
fi
bash scripts/gate.sh
