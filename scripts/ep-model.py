#!/usr/bin/env python3
"""The expert-parallel cost model (docs/ep.md): calibrated on the 1- and 2-rank runs of a case,
checked against the runs with more ranks, then used to project larger N and a two-level network.

Usage: scripts/ep-model.py RUN_N1.json RUN_N2.json [RUN_N3.json ...]
         [--inter-latency-us 5] [--inter-gbytes-per-s 12.5] [--ranks-per-node 8]
         [--save CALIBRATION.json]

Each file is one `mpirun -np N moe-bench run --ep N --json FILE` of the same case(s), with the same
threads per rank (scripts/ep-sweep.sh runs one thread per rank). Per case the model is

  step(N)    = bound(overhead + work_r over the ranks r) + exchange(N) x max(1, N x threads / cores)
  work_r     = a x rows_r + b x experts_r   (the rows and distinct experts rank r computed, from
               the run's placement; a: per row, b: streaming one expert)
  exchange(N)= 2 (N - 1) alpha + (dispatch + combine bytes of the busiest rank) / beta
  overhead   = route, packing, unpacking and summing at one rank
  bound(w)   = the busiest core's total with the ranks bound round-robin to slots of `threads`
               cores (rank r on slot r mod (cores / threads)) and a slot's ranks taking turns
               (scripts/ep-sweep.sh launches with --bind-to core:overload-allowed --map-by core)

a and b come from the 1- and 2-rank computes, alpha (per message) and beta (bytes/s) from the
2-rank run's two exchanges of different sizes, the overhead from the 1-rank run. Every run with 3
or more ranks is a prediction; the 2-rank step is predicted from its parts' calibration only in
compute and exchange. Where ranks outnumber cores, the ranks that share a core take turns: three
balanced ranks on two cores take as long as four (two share core 0); a skewed load costs what
its busiest core holds. --save writes the calibration, which
`moe-bench run --ep N --ep-model FILE` reads to put its own prediction in `model_predicted_s`
(the same formula, docs/ep.md).
A two-level network (fast links inside a node of --ranks-per-node ranks, slower ones across) uses
alpha and beta inside a node and the --inter-* figures across.
"""
import argparse
import json
import sys


# What the model's constants depend on (the layer's shape and dtype, tokens and threads per rank),
# and what they do not: routing, capacity and placement only change the rows, experts and bytes
# each rank has, which every run reports.
FAMILY = ("preset", "experts", "top_k", "d_model", "d_ff", "shared_experts", "d_ff_shared",
          "activation", "dtype", "tokens_per_rank", "threads_per_rank")


def family_of(r):
    c, ep = r["case"], r["ep"]
    f = {k: c.get(k) for k in FAMILY[:9]}
    f["preset"] = f["preset"] or ""
    f["tokens_per_rank"] = ep["tokens_per_rank"]
    f["threads_per_rank"] = ep["threads_per_rank"]
    return f


def load(paths):
    """{family: {(routing, capacity, placement): {ranks: run}}}"""
    runs = {}
    for path in paths:
        with open(path) as f:
            report = json.load(f)
        if "results" not in report:  # a calibration (--save) or another file
            continue
        cores = report["context"]["cpu"]["threads"]
        for r in report["results"]:
            if r.get("status") != "ok" or "ep" not in r:
                continue
            fam = tuple(family_of(r).items())
            variant = (r["case"]["routing"], r["case"]["capacity_factor"], r["ep"]["placement"])
            runs.setdefault(fam, {}).setdefault(variant, {})[r["ep"]["ranks"]] = dict(r, cores=cores)
    return runs


def oversubscription(run):
    ep = run["ep"]
    return max(1.0, ep["ranks"] * ep["threads_per_rank"] / run["cores"])


def bound(works, cores, threads):
    """The busiest core's total: ranks bound round-robin to slots of `threads` cores, a slot's
    ranks taking turns."""
    slots = [0.0] * max(1, cores // max(threads, 1))
    for r, w in enumerate(works):
        slots[r % len(slots)] += w
    return max(slots)


def model(variants):
    """Calibrates on every 1- and 2-rank run of one family (all routings and placements)."""
    ones = [v[1] for v in variants.values() if 1 in v]
    twos = [v[2] for v in variants.values() if 2 in v]

    def mean(xs):
        return sum(xs) / len(xs)

    def overhead_of(run):
        st = run["ep"]["stages_s"]
        return (st["route"] + st["dispatch"] + st["combine"] - st["dispatch_exchange"]
                - st["combine_exchange"])
    overhead = mean([overhead_of(r) for r in ones])
    # compute = a rows + b experts on the busiest rank, least squares in relative error over
    # every run: routings and placements give rows and experts in different proportions.
    points = []
    for run in ones + twos:
        ep = run["ep"]
        i = max(range(len(ep["rows_per_rank"])), key=lambda r: ep["rows_per_rank"][r])
        c = ep["stages_s"]["compute"] / oversubscription(run)
        points.append((ep["rows_per_rank"][i] / c, ep["experts_per_rank"][i] / c))
    s11 = sum(p * p for p, _ in points)
    s12 = sum(p * q for p, q in points)
    s22 = sum(q * q for _, q in points)
    det = s11 * s22 - s12 * s12
    if abs(det) > 1e-9 * s11 * s22:
        t1, t2 = sum(p for p, _ in points), sum(q for _, q in points)
        a, b = (t1 * s22 - t2 * s12) / det, (s11 * t2 - s12 * t1) / det
    else:  # rows and experts always in one proportion: rows alone
        a, b = mean([1 / p for p, _ in points if p > 0]), 0.0
    # alpha (per message) and 1/beta (per byte) from the 2-rank exchanges: dispatch and combine
    # move different sizes; where the larger one is not the slower, latency only.
    slopes, alphas = [], []
    for run in twos:
        ep, st = run["ep"], run["ep"]["stages_s"]
        xd, xc = st["dispatch_exchange"], st["combine_exchange"]
        bd, bc = ep["dispatch_bytes_per_rank"], ep["combine_bytes_per_rank"]
        slope = (xc - xd) / (bc - bd) if bc != bd else 0.0
        slopes.append(max(slope, 0.0))
        alphas.append((xd + xc) / 2 if slope <= 0 else max(xd - bd * slope, 0.0))
    inv_beta = mean(slopes) if twos else 0.0
    alpha = mean(alphas) if twos else 0.0

    def predict(run, per_node=None, alpha_out=None, inv_beta_out=None):
        ep = run["ep"]
        n = ep["ranks"]
        works = [overhead + a * r + b * x
                 for r, x in zip(ep["rows_per_rank"], ep["experts_per_rank"])]
        if len(works) < n:  # a projection: every rank as the one given
            works = works * n
        exch = 0.0
        if n > 1:
            bytes_ = ep["dispatch_bytes_per_rank"] + ep["combine_bytes_per_rank"]
            if per_node is None or per_node >= n:
                exch = 2 * (n - 1) * alpha + bytes_ * inv_beta
            else:  # uniform destinations: (p - 1) / (n - 1) of the bytes stay in the node
                inside = (per_node - 1) / (n - 1)
                exch = (2 * (per_node - 1) * alpha + 2 * (n - per_node) * alpha_out
                        + bytes_ * (inside * inv_beta + (1 - inside) * inv_beta_out))
        return (bound(works, run["cores"], ep["threads_per_rank"])
                + exch * oversubscription(run))

    calibration = {"overhead_s": overhead, "row_s": a, "expert_s": b, "message_s": alpha,
                   "byte_s": inv_beta}
    return predict, calibration


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("reports", nargs="+")
    ap.add_argument("--inter-latency-us", type=float, default=5.0)
    ap.add_argument("--inter-gbytes-per-s", type=float, default=12.5)
    ap.add_argument("--ranks-per-node", type=int, default=8)
    ap.add_argument("--save", metavar="FILE",
                    help="write the calibration of every case for moe-bench run --ep-model")
    a = ap.parse_args()
    runs = load(a.reports)
    if not runs:
        sys.exit("ep-model: no expert-parallel results in these reports")
    worst = None
    saved = []
    for fam, variants in sorted(runs.items(), key=lambda kv: str(kv[0])):
        f = dict(fam)
        name = (f"{f['preset'] or 'custom'} E{f['experts']} k{f['top_k']} d{f['d_model']} "
                f"f{f['d_ff']} {f['dtype']} T/rank={f['tokens_per_rank']} "
                f"threads/rank={f['threads_per_rank']}")
        if not any(1 in v for v in variants.values()) or not any(2 in v for v in variants.values()):
            print(f"{name}: needs 1-rank and 2-rank runs to calibrate; skipped")
            continue
        predict, cal = model(variants)
        saved.append(dict(cal, case=f))
        bw = f"{1e-9 / cal['byte_s']:.2f} GB/s" if cal["byte_s"] > 0 else "latency only"
        print(f"{name}: alpha {cal['message_s'] * 1e6:.1f} us, beta {bw}, "
              f"{cal['row_s'] * 1e6:.1f} us per row, {cal['expert_s'] * 1e6:.1f} us per expert, "
              f"overhead {cal['overhead_s'] * 1e6:.1f} us")
        for (routing, capacity, placement), by_n in sorted(variants.items(), key=str):
            print(f"  {routing} C={capacity} {placement}")
            print("    N  measured step    predicted    error")
            for n in sorted(by_n):
                run = by_n[n]
                measured = run["stats"]["median_s"]
                pred = predict(run)
                err = (pred - measured) / measured
                tag = " (calibration)" if n <= 2 else ""
                if n > 2:
                    worst = max(worst or 0.0, abs(err))
                print(f"    {n}  {measured * 1e3:10.3f} ms {pred * 1e3:10.3f} ms  {err:+7.1%}{tag}")
            # Projection: every rank on cores of its own, the largest measured imbalance, E/N
            # experts per rank (at least one), bytes per rank as at the largest N.
            big = by_n[max(by_n)]
            be = big["ep"]
            imbalance = be["load_max_over_mean"]
            rows_total = sum(be["rows_per_rank"])
            per_node = a.ranks_per_node
            print(f"    projection ({per_node} ranks per node, {a.inter_latency_us} us and "
                  f"{a.inter_gbytes_per_s} GB/s across nodes, T per rank fixed, load max/mean "
                  f"{imbalance:.2f}):")
            for n in (8, 16, 32, 64):
                scale = n / be["ranks"]  # the layer grows with the ranks (T per rank fixed)
                ep = dict(be, ranks=n, threads_per_rank=1,
                          rows_per_rank=[rows_total * scale / n * imbalance],
                          experts_per_rank=[max(1, f["experts"] // n)])
                run = {"ep": ep, "cores": n}
                flat = predict(run)
                two = predict(run, per_node=per_node, alpha_out=a.inter_latency_us * 1e-6,
                              inv_beta_out=1e-9 / a.inter_gbytes_per_s)
                print(f"      N={n:3d}: one fast network {flat * 1e3:9.3f} ms, two-level "
                      f"{two * 1e3:9.3f} ms")
    if worst is not None:
        print(f"largest prediction error over the runs with 3 or more ranks: {worst:.1%}")
    if a.save:
        if not saved:
            sys.exit("ep-model: no case has 1-rank and 2-rank runs: nothing to save")
        with open(a.save, "w") as out:
            json.dump({"schema": "moe-bench-ep-model/2", "cases": saved}, out, indent=1)
            out.write("\n")


if __name__ == "__main__":
    main()
