#!/usr/bin/env bash
# Measures the gate's power on this machine (docs/checks.md): N runs each of an A/A pair and of
# the cpu kernel slowed by 10% and by 20% (the test-only --inject-slowdown), interleaved, with
# exactly the gate's flags; prints how often the gate fired for each. Needs the reference build
# that scripts/gate.sh makes. Usage: bash scripts/gate-power.sh [N] [OUT.jsonl] [FIRST_SEED]
# (timing seeds FIRST_SEED.., default 1: a later batch that extends an earlier one starts after it).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-20}
out=${2:-build/gate-power.jsonl}
first=${3:-1}
: > "$out"
for i in $(seq "$first" $((first + n - 1))); do
  for slow in 0 0.1 0.2; do
    extra=()
    [ "$slow" = 0 ] || extra=(--inject-slowdown "cpu:$slow")
    start=$(date +%s.%N)
    set +e
    bash scripts/gate.sh --timing-seed "$i" --json "build/gate-power-run.json" "${extra[@]}" \
      > /dev/null 2>&1
    code=$?
    set -e
    end=$(date +%s.%N)
    python3 - "$slow" "$code" "$start" "$end" build/gate-power-run.json "$i" >> "$out" <<'PY'
import json, sys
slow, code, start, end, path, seed = sys.argv[1:]
run = json.load(open(path))
print(json.dumps({"seed": int(seed), "slowdown": float(slow), "exit": int(code), "seconds": float(end) - float(start),
                  "threshold": run["threshold"], "alpha": run["alpha"],
                  "ratios": [c["ratio"] for c in run["changes"]],
                  "p_values": [c["p_value"] for c in run["changes"]],
                  "verdicts": [c["verdict"] for c in run["changes"]]}))
PY
  done
done
python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for slow in sorted({r["slowdown"] for r in rows}):
    rs = [r for r in rows if r["slowdown"] == slow]
    fired = sum(r["exit"] == 1 for r in rs)
    other = sum(r["exit"] not in (0, 1) for r in rs)
    worst = [max(r["ratios"]) for r in rs]
    print(f"slowdown {slow:.0%}: gate fired in {fired}/{len(rs)} runs"
          f"{f' ({other} errors)' if other else ''}; the run's largest case ratio "
          f"{min(worst):.3f}..{max(worst):.3f}; median run "
          f"{sorted(r['seconds'] for r in rs)[len(rs) // 2]:.0f} s")
PY
