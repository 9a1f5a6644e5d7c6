#!/usr/bin/env bash
# The expert-parallel sweep of docs/ep.md: the same case on 1 to 4 ranks (oversubscribed where
# the machine has fewer cores), each run's JSON in OUT. The cost model is calibrated on the 1- and
# 2-rank runs (OUT/ep-model.json); the 3- and 4-rank runs then carry its prediction
# (model_predicted_s), and ep-model.py prints every prediction and its error. Last, the 2-rank
# runs again with shared-memory windows as the exchange (OUT/window-*-n2.json), beside
# MPI_Alltoallv (the default), and load-aware placement without replicas on 2 and 4 ranks
# (OUT/noreplicas-load-aware-n*.json): what the placement does alone.
# Usage: bash scripts/ep-sweep.sh OUT [moe-bench run flags]   (default: workload A, 32 tokens
# per rank, one thread per rank, f32, uniform, zipf:1.2 and hot:0.5 routing, contiguous and
# load-aware)
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
run() {  # ranks placement [more flags]
  local n=$1 placement=$2
  shift 2
  local name=${NAME:-ep}-$placement-n$n
  echo "ep-sweep: $n rank(s), $placement placement $*" >&2
  mpirun -q --oversubscribe "${launch[@]}" -np "$n" "$tool" run --ep "$n" --placement "$placement" -q \
    "${flags[@]}" "$@" --json "$out/$name.json" --md "$out/$name.md" > "$out/$name.txt"
}
for placement in contiguous load-aware; do
  for n in 1 2; do run "$n" "$placement"; done
done
python3 scripts/ep-model.py "$out"/ep-*-n[12].json --save "$out/ep-model.json" > /dev/null
for placement in contiguous load-aware; do
  for n in 3 4; do run "$n" "$placement" --ep-model "$out/ep-model.json"; done
done
python3 scripts/ep-model.py "$out"/ep-*-n*.json | tee "$out/ep-model.txt"
for placement in contiguous load-aware; do NAME=window run 2 "$placement" --ep-exchange window; done
for n in 2 4; do NAME=noreplicas run "$n" load-aware --replicas 0; done
