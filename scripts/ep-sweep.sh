#!/usr/bin/env bash
# The expert-parallel sweep of docs/ep.md: the same case on 1 to 4 ranks (oversubscribed where
# the machine has fewer cores), contiguous and load-aware placement measured in turn in each
# launch, each run's JSON and Markdown in OUT. The cost model is calibrated on the 1- and 2-rank
# runs (OUT/ep-model.json); the 3- and 4-rank runs then carry its prediction (model_predicted_s),
# and ep-model.py prints every prediction and its error. Then, on 2 ranks, both exchanges in turn
# (OUT/exchange-n2.json), and load-aware placement without replicas on 2 and 4 ranks
# (OUT/noreplicas-n*.json): what the placement does alone.
# Usage: bash scripts/ep-sweep.sh OUT [moe-bench run flags]   (default: workload A, 32 tokens
# per rank, one thread per rank, f32, uniform, zipf:1.2 and hot:0.5 routing)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: ep-sweep.sh OUT [run flags]}
shift
mkdir -p "$out"
flags=("$@")
# One thread per rank at every N, so that the cost model calibrates one per-thread rate.
[ ${#flags[@]} -gt 0 ] || flags=(--workload A --tokens 32 --routing uniform,zipf:1.2,hot:0.5 --threads 1)
tool=${MOE_BENCH_TOOL:-build/release/apps/moe-bench/moe-bench}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Ranks bound round-robin to cores, as the cost model assumes (one thread per rank; with T threads
# per rank pass MPIRUN_FLAGS="--map-by slot:PE=T --bind-to core").
read -r -a launch <<< "${MPIRUN_FLAGS:---bind-to core:overload-allowed --map-by core}"
run() {  # name ranks [more flags]
  local name=$1 n=$2
  shift 2
  echo "ep-sweep: $n rank(s) $*" >&2
  mpirun -q --oversubscribe "${launch[@]}" -np "$n" "$tool" run --ep "$n" -q "${flags[@]}" "$@" \
    --json "$out/$name.json" --md "$out/$name.md" > "$out/$name.txt"
}
both=(--placement contiguous,load-aware)
for n in 1 2; do run "ep-n$n" "$n" "${both[@]}"; done
python3 scripts/ep-model.py "$out"/ep-n[12].json --save "$out/ep-model.json" > /dev/null
for n in 3 4; do run "ep-n$n" "$n" "${both[@]}" --ep-model "$out/ep-model.json"; done
python3 scripts/ep-model.py "$out"/ep-n*.json | tee "$out/ep-model.txt"
run exchange-n2 2 "${both[@]}" --ep-exchange alltoallv,window
for n in 2 4; do run "noreplicas-n$n" "$n" --placement load-aware --replicas 0; done
