#!/usr/bin/env python3
"""The expert-parallel cost model (docs/ep.md): calibrated on the runs with the fewest ranks,
checked against the others, then used to project larger N and a two-level network.

Usage: scripts/ep-model.py RUN_N1.json RUN_N2.json [RUN_N3.json ...]
         [--inter-latency-us 5] [--inter-gbytes-per-s 12.5] [--ranks-per-node 8]

Each file is one `mpirun -np N moe-bench run --ep N --json FILE` of the same case(s). Per case
the model is

  step(N) = overhead(N) + compute(N) + exchange(N)
  overhead(N) = route + packing, unpacking and summing: the 1-rank figure, scaled by how many
                cores each rank gets (ranks share the machine's cores once N x threads exceeds it)
  compute(N)  = the 1-rank compute time per expert row, times the most rows any rank computes
                (measured placement load), scaled the same way
  exchange(N) = 2 (N - 1) alpha + dispatch bytes / beta + combine bytes / beta, with alpha (per
                message) and beta (bytes/s) solved from the 2-rank run's two exchanges

Calibration uses the 1- and 2-rank runs only; every other run is a prediction, and its error is
printed. A two-level network (fast links inside a node of --ranks-per-node ranks, slower ones
across nodes) uses the calibrated alpha and beta inside a node and the --inter-* figures across.
"""
import argparse
import json
import sys


def load(paths):
    runs = {}
    for path in paths:
        with open(path) as f:
            report = json.load(f)
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


def share(run):
    """Cores each rank gets: its threads, unless the ranks' threads outnumber the cores."""
    ep = run["ep"]
    return min(ep["threads_per_rank"], run["cores"] / ep["ranks"])


def model(by_n):
    one, two = by_n[1], by_n[2]
    e1, e2 = one["ep"], two["ep"]
    s1 = share(one)
    # Overhead and compute per unit of work at one rank.
    overhead1 = (e1["stages_s"]["route"] + e1["stages_s"]["dispatch"] + e1["stages_s"]["combine"]
                 - e1["stages_s"]["dispatch_exchange"] - e1["stages_s"]["combine_exchange"])
    per_row = e1["stages_s"]["compute"] / max(max(e1["rows_per_rank"]), 1)
    # alpha + bytes / beta for each exchange at two ranks: two equations, two unknowns.
    xd, xc = e2["stages_s"]["dispatch_exchange"], e2["stages_s"]["combine_exchange"]
    bd, bc = e2["dispatch_bytes_per_rank"], e2["combine_bytes_per_rank"]
    if abs(bc - bd) > 0 and (xc - xd) / (bc - bd) > 0:
        inv_beta = (xc - xd) / (bc - bd)
        alpha = max(xd - bd * inv_beta, 0.0)
    else:  # equal sizes: all of it latency
        inv_beta, alpha = 0.0, (xd + xc) / 2

    def predict(run, alpha_in=alpha, inv_beta_in=inv_beta, per_node=None, alpha_out=None,
                inv_beta_out=None):
        ep = run["ep"]
        n = ep["ranks"]
        scale = s1 / share(run)
        rows = max(ep["rows_per_rank"])
        exch = 0.0
        if n > 1:
            bytes_ = ep["dispatch_bytes_per_rank"] + ep["combine_bytes_per_rank"]
            if per_node is None or per_node >= n:
                exch = 2 * (n - 1) * alpha_in + bytes_ * inv_beta_in
            else:  # uniform destinations: (p - 1) / (n - 1) of the bytes stay in the node
                inside = (per_node - 1) / (n - 1)
                exch = (2 * (per_node - 1) * alpha_in + 2 * (n - per_node) * alpha_out
                        + bytes_ * (inside * inv_beta_in + (1 - inside) * inv_beta_out))
        return overhead1 * scale + per_row * rows * scale + exch

    return predict, alpha, inv_beta


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("reports", nargs="+")
    ap.add_argument("--inter-latency-us", type=float, default=5.0)
    ap.add_argument("--inter-gbytes-per-s", type=float, default=12.5)
    ap.add_argument("--ranks-per-node", type=int, default=8)
    a = ap.parse_args()
    runs = load(a.reports)
    if not runs:
        sys.exit("ep-model: no expert-parallel results in these reports")
    worst = 0.0
    for key, by_n in sorted(runs.items(), key=lambda kv: str(kv[0])):
        if 1 not in by_n or 2 not in by_n:
            print(f"{key}: needs a 1-rank and a 2-rank run to calibrate; skipped")
            continue
        predict, alpha, inv_beta = model(by_n)
        bw = f"{1e-9 / inv_beta:.2f} GB/s" if inv_beta > 0 else "latency only"
        print(f"case {key[0] or ''} E{key[1]} k{key[2]} d{key[3]} f{key[4]} {key[5]} "
              f"{key[6]} C={key[7]} T/rank={key[8]} {key[9]}: alpha {alpha * 1e6:.1f} us, "
              f"beta {bw}")
        print("  N  measured step    predicted    error")
        for n in sorted(by_n):
            run = by_n[n]
            measured = run["stats"]["median_s"]
            pred = predict(run)
            err = (pred - measured) / measured
            tag = " (calibration)" if n == 1 else ""
            if n > 1:
                worst = max(worst, abs(err))
            print(f"  {n}  {measured * 1e3:10.3f} ms {pred * 1e3:10.3f} ms  {err:+7.1%}{tag}")
        # Projection: balanced load at the largest measured imbalance, every rank its own cores.
        big = by_n[max(by_n)]
        imbalance = big["ep"]["load_max_over_mean"]
        rows_total = sum(big["ep"]["rows_per_rank"]) / big["ep"]["tokens_per_rank"]
        per_node = a.ranks_per_node
        print(f"  projection ({per_node} ranks per node, {a.inter_latency_us} us and "
              f"{a.inter_gbytes_per_s} GB/s across nodes; load max/mean {imbalance:.2f}):")
        for n in (8, 16, 32, 64):
            ep = dict(big["ep"])
            ep["ranks"] = n
            t = ep["tokens_per_rank"]
            ep["rows_per_rank"] = [int(rows_total * t * imbalance)]
            frac = (n - 1) / n  # uniform routing: this share of the records leaves the rank
            ep["dispatch_bytes_per_rank"] = big["ep"]["dispatch_bytes_per_rank"] / max(
                (big["ep"]["ranks"] - 1) / big["ep"]["ranks"], 1e-9) * frac
            ep["combine_bytes_per_rank"] = big["ep"]["combine_bytes_per_rank"] / max(
                (big["ep"]["ranks"] - 1) / big["ep"]["ranks"], 1e-9) * frac
            ep["threads_per_rank"] = share(by_n[1])
            run = {"ep": ep, "cores": share(by_n[1]) * n}
            flat = predict(run)
            two = predict(run, per_node=per_node, alpha_out=a.inter_latency_us * 1e-6,
                          inv_beta_out=1e-9 / a.inter_gbytes_per_s)
            print(f"    N={n:3d}: one fast network {flat * 1e3:9.3f} ms, two-level "
                  f"{two * 1e3:9.3f} ms")
    print(f"largest prediction error over the runs with 2 or more ranks: {worst:.1%}")


if __name__ == "__main__":
    main()
