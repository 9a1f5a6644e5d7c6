#!/usr/bin/python3
"""Renders PNG charts from a moe-bench JSON report (schema v1).

Usage: reports/plot.py RESULTS.json [--out DIR]

Writes <stem>_throughput.png (tokens/s per case, one colour per implementation, intervals
drawn), <stem>_speedups.png, <stem>_latency.png, <stem>_roofline.png, <stem>_crosslang.png
(speed-ups over the Python peers numpy, torch and ipex; empty without them) and
<stem>_dashboard.png (throughput, speed-ups, roofline and latency on one page) next to the report
(or into DIR). Needs Debian's python3-matplotlib.
"""
import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def case_label(case):
    name = case["preset"] or "E{} k{} d{} f{}".format(
        case["experts"], case["top_k"], case["d_model"], case["d_ff"])
    label = "{} T={}".format(name, case["tokens"])
    if case["routing"] != "uniform":
        label += " " + case["routing"]
    if case["capacity_factor"] > 0:
        label += " C={:g}".format(case["capacity_factor"])
    if case.get("dtype", "f32") != "f32":
        label += " " + case["dtype"]
    return label


def ok_results(report):
    return [r for r in report["results"] if r["status"] == "ok"]


PEERS = ("numpy", "torch", "ipex")


def colors(report):
    """One colour per implementation, the same in every chart of the report."""
    palette = plt.get_cmap("tab10").colors
    impls = list(dict.fromkeys(r["impl"] for r in report["results"]))
    return {impl: palette[i % len(palette)] for i, impl in enumerate(impls)}


def peer_label(report, impl):
    """An implementation's name, with the version of a Python peer ("torch 2.8.0")."""
    for r in report["results"]:
        if r["impl"] == impl and impl in PEERS and r["status"] == "ok":
            for part in r.get("notes", "").split(", "):
                key, _, version = part.partition(" ")
                if key in (impl, "numpy") and version:
                    return "{} {}".format(impl, version)
    return impl


def plot_throughput(report, ax):
    results = ok_results(report)
    cases = list(dict.fromkeys(case_label(r["case"]) for r in results))
    impls = list(dict.fromkeys(r["impl"] for r in results))
    width = 0.8 / max(len(impls), 1)
    color = colors(report)
    for i, impl in enumerate(impls):
        xs, ys, lo, hi = [], [], [], []
        for r in results:
            if r["impl"] != impl:
                continue
            tokens = r["case"]["tokens"]
            med = r["stats"]["median_s"]
            ci = r["stats"]["median_ci_s"]
            xs.append(cases.index(case_label(r["case"])) + i * width)
            ys.append(tokens / med)
            # A slower time bound is a lower throughput bound.
            lo.append(tokens / med - tokens / ci[1])
            hi.append(tokens / ci[0] - tokens / med)
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=peer_label(report, impl),
               color=color[impl])
    ax.set_xticks([c + width * (len(impls) - 1) / 2 for c in range(len(cases))])
    ax.set_xticklabels(cases, rotation=20, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("tokens/s (median, 95% CI)")
    ax.set_title("Throughput per configuration")
    if impls:
        ax.legend(fontsize=8)


def plot_speedups(report, ax):
    comps = report["comparisons"]
    if comps:
        labels = ["{}: {} over {}".format(case_label(c["case"]), c["a"], c["b"]) for c in comps]
        ratios = [c["speedup"] for c in comps]
        lo = [c["speedup"] - c["speedup_ci"][0] for c in comps]
        hi = [c["speedup_ci"][1] - c["speedup"] for c in comps]
        colors = ["tab:green" if c["faster_with_confidence"] else "tab:gray" for c in comps]
        ys = range(len(comps))
        ax.barh(ys, ratios, xerr=[lo, hi], capsize=3, color=colors)
        ax.set_yticks(list(ys))
        ax.set_yticklabels(labels, fontsize=8)
        ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xlabel("speed-up (ratio of medians, 95% bootstrap CI; green: faster with confidence)")
    ax.set_title("Speed-ups")


def plot_latency(report, ax):
    results = ok_results(report)
    if results:
        data = [[s * 1e3 for s in r["samples_s"]] for r in results]
        boxes = ax.boxplot(data, showfliers=True, patch_artist=True)
        color = colors(report)
        for box, r in zip(boxes["boxes"], results):
            box.set_facecolor(color[r["impl"]])
        ax.set_xticks(range(1, len(results) + 1))
        ax.set_xticklabels(["{}\n{}".format(r["impl"], case_label(r["case"])) for r in results],
                           rotation=30, ha="right", fontsize=7)
        ax.set_yscale("log")
    ax.set_ylabel("ms per call (every sample; outliers shown)")
    ax.set_title("Latency distributions")


def plot_roofline(report, ax):
    peaks = report["context"]["peaks"]
    results = ok_results(report)
    color = colors(report)
    if peaks and results:
        flops_peak = peaks["fp32_gflops"]
        bandwidth = peaks["read_gbytes_per_s"]
        intensities = [r["derived"]["gflops"] / r["derived"]["gbytes_per_s"] for r in results]
        lo = min(intensities + [flops_peak / bandwidth]) / 4
        hi = max(intensities + [flops_peak / bandwidth]) * 4
        xs = [lo * (hi / lo) ** (i / 200) for i in range(201)]
        ax.plot(xs, [min(flops_peak, bandwidth * x) for x in xs], color="black",
                label="roofline ({:.0f} GFLOP/s, {:.0f} GB/s, {} threads)".format(
                    flops_peak, bandwidth, peaks["threads"]))
        for impl in dict.fromkeys(r["impl"] for r in results):
            pts = [(i, r) for i, r in zip(intensities, results) if r["impl"] == impl]
            ax.scatter([p[0] for p in pts], [p[1]["derived"]["gflops"] for p in pts],
                       label=peer_label(report, impl), color=color[impl])
            for x, r in pts:
                ax.annotate("T={}".format(r["case"]["tokens"]), (x, r["derived"]["gflops"]),
                            fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel("operational intensity (FLOP/byte, design's counts)")
    ax.set_ylabel("GFLOP/s (median)")
    ax.set_title("Roofline")
    if results:
        ax.legend(fontsize=8)


def plot_crosslang(report, ax):
    """Speed-up of every implementation over the Python peers, with interval bars."""
    comps = [c for c in report["comparisons"] if c["b"] in PEERS]
    color = colors(report)
    if comps:
        labels = ["{}\n{} over {}".format(case_label(c["case"]), c["a"], c["b"]) for c in comps]
        xs = range(len(comps))
        ratios = [c["speedup"] for c in comps]
        lo = [c["speedup"] - c["speedup_ci"][0] for c in comps]
        hi = [c["speedup_ci"][1] - c["speedup"] for c in comps]
        ax.bar(xs, ratios, yerr=[lo, hi], capsize=3, color=[color[c["b"]] for c in comps])
        ax.set_xticks(list(xs))
        ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=7)
        ax.set_yscale("log")
    ax.axhline(1.0, color="black", linewidth=1)
    ax.set_ylabel("speed-up over the peer (95% CI)")
    peers = [peer_label(report, p) for p in PEERS if any(c["b"] == p for c in comps)]
    ax.set_title("Cross-language comparison (bar colour: the peer; {})".format(
        ", ".join(peers) or "no peer ran"))


def chart_size(report, name):
    n_cases = len({case_label(r["case"]) for r in ok_results(report)})
    n_results = len(ok_results(report))
    n_comps = len(report["comparisons"])
    return {"throughput": (max(6, 1.6 * n_cases), 4.5),
            "speedups": (7, max(2.5, 0.45 * n_comps + 1)),
            "latency": (max(6, 0.8 * n_results), 4.5),
            "roofline": (7, 5),
            "crosslang": (max(6, 0.5 * n_comps + 2), 4.5)}[name]


def plot_serving(report, ax):
    """`serve`: P99 latency against the throughput achieved, one curve per implementation, with
    the P99 interval as error bars and the SLO drawn."""
    col = colors(report)
    slo = None
    for impl in dict.fromkeys(r["impl"] for r in report["results"]):
        pts = sorted((r["serving"]["achieved_rps"], r["serving"]["latency_s"]["p99"],
                      r["serving"]["p99_ci_s"]) for r in report["results"]
                     if r["impl"] == impl and r.get("serving") and r["status"] == "ok")
        if not pts:
            continue
        x = [p[0] for p in pts]
        y = [p[1] * 1e3 for p in pts]
        err = [[max(0.0, p[1] - p[2][0]) * 1e3 for p in pts],
               [max(0.0, p[2][1] - p[1]) * 1e3 for p in pts]]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, color=col[impl], label=impl)
    for r in report["results"]:
        if r.get("serving"):
            slo = r["serving"]["slo_s"]
    if slo:
        ax.axhline(slo * 1e3, color="grey", linestyle="--", label="SLO {:.3g} ms".format(slo * 1e3))
    ax.set_xlabel("requests served per second")
    ax.set_ylabel("P99 latency (ms, 95% CI)")
    ax.set_yscale("log")
    ax.set_title("Latency under load")
    ax.legend()


def save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_dashboard(report, path):
    """One page: throughput, speed-ups, roofline and latency, with the machine in the title."""
    fig, axes = plt.subplots(2, 2, figsize=(18, 12))
    plot_throughput(report, axes[0][0])
    plot_speedups(report, axes[0][1])
    plot_roofline(report, axes[1][0])
    plot_latency(report, axes[1][1])
    ctx = report["context"]
    fig.suptitle("moe-bench {} on {} ({} threads, cache {})".format(
        report["tool"]["git_commit"], ctx["cpu"]["model"], ctx["cpu"]["threads"],
        ctx.get("cache_mode", "?")))
    save(fig, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report")
    parser.add_argument("--out", help="folder for the PNGs (default: beside the report)")
    args = parser.parse_args()
    try:
        with open(args.report) as f:
            report = json.load(f)
    except (OSError, ValueError) as e:
        sys.exit("plot.py: error: cannot read {}: {}".format(args.report, e))
    if report.get("schema_version") != 1:
        sys.exit("plot.py: error: {} is not a moe-bench schema v1 report".format(args.report))
    out = args.out or os.path.dirname(os.path.abspath(args.report))
    stem = os.path.splitext(os.path.basename(args.report))[0]
    if any(r.get("serving") for r in report["results"]):
        # `serve`: the latency-throughput curve is the chart (no speed-ups or roofline).
        path = os.path.join(out, "{}_serving.png".format(stem))
        fig, ax = plt.subplots(figsize=(8, 5))
        plot_serving(report, ax)
        save(fig, path)
        print(path)
        return
    for name, fn in (("throughput", plot_throughput), ("speedups", plot_speedups),
                     ("latency", plot_latency), ("roofline", plot_roofline),
                     ("crosslang", plot_crosslang)):
        path = os.path.join(out, "{}_{}.png".format(stem, name))
        fig, ax = plt.subplots(figsize=chart_size(report, name))
        fn(report, ax)
        save(fig, path)
        print(path)
    path = os.path.join(out, "{}_dashboard.png".format(stem))
    plot_dashboard(report, path)
    print(path)


if __name__ == "__main__":
    main()
