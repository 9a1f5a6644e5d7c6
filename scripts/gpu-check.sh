#!/usr/bin/env bash
# The GPU check (../shared/DEVICE.md): build for the lent device, run the CUDA tests,
# compute-sanitizer on one small case, then the CUDA benchmarks beside the cuBLAS baseline, with
# the JSON and Markdown reports copied to $OUT (or reports/gpu/ when OUT is unset).
#
# The PyTorch GPU peers run under the python3 on PATH (the device image's, with torch).
#
# Needs .devdeps (../shared/device/fetch-debs.sh) where the Debian build dependencies are not
# installed, and CUTLASS's pinned wheel in .devdeps/ for cuda_cutlass (the device has no network;
# `cp "$(scripts/install-cutlass.sh --print-dir)"/*.whl .devdeps/` after install-deps.sh): the
# wheel (6.4 MB) travels, its 28 MB of headers are unpacked on the device. Without a CUDA device
# it builds, then stops at the first GPU step with "no CUDA device" and exit 3.
#
# The last step runs the AMX kernels beside AVX512-BF16, FP32 and the torch peer on the device
# machine's own CPU (an Intel Xeon with AMX), on 2 and on every core.
#
# `gpu-check.sh decode`: a shorter second call: tests, sanitizer, then the decode benchmarks of
# cuda's two math paths (cuda_gemm, cuda_gemv) beside cuda and cublas, without the peers.
set -euo pipefail
mode=${1:-full}
cd "$(dirname "$0")/.."
root=$PWD
out=${OUT:-$root/reports/gpu}
mkdir -p "$out"
build=build/gpu
jobs=$(nproc)
arch=${MOE_BENCH_CUDA_ARCHS:-90a-real}
log() { printf '\n== %s (%s)\n' "$*" "$(date +%T)"; }

prefix=()
if [ -d .devdeps/usr ]; then
  prefix=(-DCMAKE_PREFIX_PATH="$root/.devdeps/usr")
  export LD_LIBRARY_PATH="$root/.devdeps/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)

# Everything the script prints also goes to $out/gpu-check.log (it comes back even when the call
# is stopped at its limit); each GPU step has its own time limit so one hang cannot eat the lease.
exec > >(tee "$out/gpu-check.log") 2>&1
python=$(command -v python3 || echo python3)

cutlass=()
wheel=$(ls .devdeps/nvidia_cutlass-*.whl 2>/dev/null | head -1 || true)
if [ -n "$wheel" ]; then
  MOE_BENCH_CUTLASS_DIR="$root/.devdeps/cutlass" bash scripts/install-cutlass.sh --from "$wheel"
  cutlass=(-DMOE_BENCH_CUTLASS_DIR="$root/.devdeps/cutlass")
else
  echo "gpu-check: no CUTLASS wheel in .devdeps/: cuda_cutlass will say it was built without it"
fi

log "configure and build ($arch, $jobs jobs)"
mkdir -p "$build"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_COMPILER="$nvcc" \
  -DCMAKE_CUDA_ARCHITECTURES="$arch" "${prefix[@]}" "${cutlass[@]}" >"$build/build.log" 2>&1 ||
  { tail -30 "$build/build.log"; exit 1; }
cmake --build "$build" -j "$jobs" --target moe-bench moe_bench_tests >>"$build/build.log" 2>&1 ||
  { tail -40 "$build/build.log"; exit 1; }
grep "moe-bench: \(CUTLASS\|cuda_cutlass\)" "$build/build.log" || true
bench=$build/apps/moe-bench/moe-bench
tests=$build/tests/moe_bench_tests

log "device"
command -v nvidia-smi >/dev/null &&
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem,power.limit \
    --format=csv || true
"$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
  "grouped_mm", hasattr(torch, "_grouped_mm"))' || true
status=$("$bench" run --impl cuda --experts 4 --top-k 2 --d-model 64 --d-ff 64 --tokens 4 \
  --reps 1 --min-time 0 --max-time 1 -q 2>&1) || {
  code=$?
  echo "gpu-check: $status"
  [ "$code" -eq 3 ] && echo "gpu-check: no CUDA device, stopping before the GPU steps"
  exit "$code"
}
step() { # LIMIT_S COMMAND...: runs a step, says when it fails or runs out of time, goes on
  local limit=$1
  shift
  timeout "$limit" "$@" || echo "gpu-check: step exited with $? (limit ${limit} s): $*"
}

log "CUDA tests (oracle on the consistency grid in every dtype, bitwise repeat)"
step 150 "$tests" "CUDA implementations match the oracle and repeat bit for bit"
step 30 "$tests" "the CUTLASS engines run bf16 only and say why they cannot run here"
step 150 "$tests" "every registered implementation matches the FP64 oracle on the consistency grid"

log "compute-sanitizer on one small case"
sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
step 120 "$sanitizer" --tool memcheck --leak-check full --error-exitcode 9 \
  "$bench" run --impl cuda,cuda_graph,cuda_gemm,cuda_gemv,cublas --experts 8 --top-k 2 --d-model 200 --d-ff 136 --tokens 37 \
  --dtype f32,bf16 --routing zipf:1.2 --capacity-factor 0,1 --reps 2 --min-time 0 --max-time 1 -q
step 120 "$sanitizer" --tool memcheck --leak-check full --error-exitcode 9 \
  "$bench" run --impl cuda_cutlass,cuda_cutlass_graph --experts 8 --top-k 2 --d-model 200 \
  --d-ff 136 --tokens 300 --dtype bf16 --routing zipf:1.2 --capacity-factor 0,1 --reps 2 \
  --min-time 0 --max-time 1 -q

if [ "$mode" = decode ]; then
  log "decode benchmarks, bf16: cuda's math paths beside cublas"
  common=(--impl cuda,cuda_graph,cuda_gemm,cuda_gemv,cublas --baseline cublas --dtype bf16 --reps 10
    --min-time 0.3 --max-time 3 -q)
  step 90 "$bench" run --workload A --tokens 1,32 "${common[@]}" \
    --json "$out/gpu-decode-workload-a.json" --md "$out/gpu-decode-workload-a.md"
  step 150 "$bench" run --preset mixtral-8x7b --tokens 1,8,64 "${common[@]}" \
    --json "$out/gpu-decode-mixtral.json" --md "$out/gpu-decode-mixtral.md"
  log "done"
  ls -la "$out"
  exit 0
fi

log "the PyTorch GPU peers against the oracle (small case, every dtype, capacity on and off)"
step 120 "$bench" run --impl cuda,torch_cuda,torch_grouped_mm --python "$python" --experts 8 \
  --top-k 2 --d-model 200 --d-ff 136 --tokens 37 --dtype f32,bf16,f16 --routing zipf:1.2 \
  --capacity-factor 0,1 --reps 3 --min-time 0 --max-time 1 -q

log "benchmarks, bf16: prefill (mixtral-8x7b 4096, workload B 1024), then decode"
common=(--impl cuda,cuda_graph,cuda_cutlass,cuda_cutlass_graph,cublas,torch_cuda,torch_grouped_mm
  --baseline cublas,torch_grouped_mm --dtype bf16 --python "$python" --reps 10 --min-time 0.3
  --max-time 3 -q)
step 150 "$bench" run --preset mixtral-8x7b --tokens 4096 "${common[@]}" \
  --json "$out/gpu-mixtral-prefill.json" --md "$out/gpu-mixtral-prefill.md"
step 120 "$bench" run --workload B --tokens 1024 "${common[@]}" \
  --json "$out/gpu-workload-b-prefill.json" --md "$out/gpu-workload-b-prefill.md"
step 150 "$bench" run --workload A --tokens 1,32 "${common[@]}" --json "$out/gpu-workload-a.json" \
  --md "$out/gpu-workload-a.md"
step 150 "$bench" run --preset mixtral-8x7b --tokens 1,8,64 "${common[@]}" \
  --json "$out/gpu-mixtral-decode.json" --md "$out/gpu-mixtral-decode.md"

log "AMX on this machine's CPU: cpu_amx beside cpu_avx512_bf16, cpu (f32) and torch, bf16"
grep -o -w 'amx_tile\|amx_bf16\|avx512_bf16' /proc/cpuinfo | sort | uniq -c || true
cores=$(nproc)
step 150 "$bench" run --impl cpu_amx,cpu_avx512_bf16,cpu,torch --baseline cpu,torch --dtype bf16 \
  --workload A --tokens 512 --threads "2,$cores" --python "$python" --reps 10 --min-time 0.3 \
  --max-time 3 -q --json "$out/amx-workload-a.json" --md "$out/amx-workload-a.md"
step 150 "$bench" run --impl cpu_amx,cpu_avx512_bf16,cpu,torch --baseline cpu,torch --dtype bf16 \
  --workload B --tokens 1024 --threads "2,$cores" --python "$python" --reps 10 --min-time 0.3 \
  --max-time 3 -q --json "$out/amx-workload-b.json" --md "$out/amx-workload-b.md"
step 60 "$bench" run --impl cpu --dtype f32 --workload A --tokens 512 --threads "2,$cores" \
  --reps 10 --min-time 0.3 --max-time 3 -q --json "$out/amx-f32-workload-a.json"

log "done"
ls -la "$out"
