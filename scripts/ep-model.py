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


def load(paths):
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
            c = r["case"]
            key = (c.get("preset"), c["experts"], c["top_k"], c["d_model"], c["d_ff"],
                   c["dtype"], c["routing"], c["capacity_factor"], r["ep"]["tokens_per_rank"],
                   r["ep"]["placement"])
            runs.setdefault(key, {})[r["ep"]["ranks"]] = dict(r, cores=cores)
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


def model(by_n):
    one, two = by_n[1], by_n[2]
    e1, e2 = one["ep"], two["ep"]
    st1, st2 = e1["stages_s"], e2["stages_s"]
    overhead = (st1["route"] + st1["dispatch"] + st1["combine"] - st1["dispatch_exchange"]
                - st1["combine_exchange"])
    # compute = a rows + b experts on the busiest rank: two runs, two unknowns.
    def busiest(ep):
        i = max(range(len(ep["rows_per_rank"])), key=lambda r: ep["rows_per_rank"][r])
        return ep["rows_per_rank"][i], ep["experts_per_rank"][i]
    r1, x1 = busiest(e1)
    r2, x2 = busiest(e2)
    c1 = st1["compute"] / oversubscription(one)
    c2 = st2["compute"] / oversubscription(two)
    det = r1 * x2 - r2 * x1
    if det != 0:
        a = (c1 * x2 - c2 * x1) / det
        b = (r1 * c2 - r2 * c1) / det
    else:
        a, b = c1 / max(r1, 1), 0.0
    xd, xc = st2["dispatch_exchange"], st2["combine_exchange"]
    bd, bc = e2["dispatch_bytes_per_rank"], e2["combine_bytes_per_rank"]
    inv_beta = (xc - xd) / (bc - bd) if bc != bd else 0.0
    if inv_beta <= 0:
        inv_beta, alpha = 0.0, (xd + xc) / 2  # no size dependence seen: latency only
    else:
        alpha = max(xd - bd * inv_beta, 0.0)

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
    worst = 0.0
    saved = []
    for key, by_n in sorted(runs.items(), key=lambda kv: str(kv[0])):
        if 1 not in by_n or 2 not in by_n:
            print(f"{key}: needs a 1-rank and a 2-rank run to calibrate; skipped")
            continue
        predict, cal = model(by_n)
        alpha, inv_beta, a_row, b_expert = (cal["message_s"], cal["byte_s"], cal["row_s"],
                                            cal["expert_s"])
        one = by_n[1]
        c = one["case"]
        saved.append(dict(cal, case={
            "preset": c.get("preset") or "", "experts": c["experts"], "top_k": c["top_k"],
            "d_model": c["d_model"], "d_ff": c["d_ff"], "dtype": c["dtype"],
            "routing": c["routing"], "capacity_factor": c["capacity_factor"],
            "tokens_per_rank": one["ep"]["tokens_per_rank"], "placement": one["ep"]["placement"],
            "threads_per_rank": one["ep"]["threads_per_rank"]}))
        bw = f"{1e-9 / inv_beta:.2f} GB/s" if inv_beta > 0 else "latency only"
        print(f"case {key[0] or ''} E{key[1]} k{key[2]} d{key[3]} f{key[4]} {key[5]} "
              f"{key[6]} C={key[7]} T/rank={key[8]} {key[9]}: alpha {alpha * 1e6:.1f} us, "
              f"beta {bw}, {a_row * 1e6:.1f} us per row, {b_expert * 1e6:.1f} us per expert")
        print("  N  measured step    predicted    error")
        for n in sorted(by_n):
            run = by_n[n]
            measured = run["stats"]["median_s"]
            pred = predict(run)
            err = (pred - measured) / measured
            tag = " (calibration)" if n == 1 else " (parts calibrated here)" if n == 2 else ""
            if n > 2:
                worst = max(worst, abs(err))
            print(f"  {n}  {measured * 1e3:10.3f} ms {pred * 1e3:10.3f} ms  {err:+7.1%}{tag}")
        # Projection: every rank on cores of its own, balanced routing at the largest measured
        # imbalance, E/N experts per rank (at least one), bytes per rank as at the largest N.
        big = by_n[max(by_n)]
        be = big["ep"]
        imbalance = be["load_max_over_mean"]
        rows_total = sum(be["rows_per_rank"])
        experts = big["case"]["experts"]
        per_node = a.ranks_per_node
        print(f"  projection ({per_node} ranks per node, {a.inter_latency_us} us and "
              f"{a.inter_gbytes_per_s} GB/s across nodes, T per rank fixed, load max/mean "
              f"{imbalance:.2f}):")
        for n in (8, 16, 32, 64):
            scale = n / be["ranks"]  # the layer grows with the ranks (T per rank fixed)
            ep = dict(be, ranks=n, threads_per_rank=1,
                      rows_per_rank=[rows_total * scale / n * imbalance],
                      experts_per_rank=[max(1, experts // n)])
            run = {"ep": ep, "cores": n}
            flat = predict(run)
            two = predict(run, per_node=per_node, alpha_out=a.inter_latency_us * 1e-6,
                          inv_beta_out=1e-9 / a.inter_gbytes_per_s)
            print(f"    N={n:3d}: one fast network {flat * 1e3:9.3f} ms, two-level "
                  f"{two * 1e3:9.3f} ms")
    print(f"largest prediction error over the runs with 3 or more ranks: {worst:.1%}")
    if a.save:
        if not saved:
            sys.exit("ep-model: no case has a 1-rank and a 2-rank run: nothing to save")
        with open(a.save, "w") as f:
            json.dump({"schema": "moe-bench-ep-model/1", "cases": saved}, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
