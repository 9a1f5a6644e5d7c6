#!/usr/bin/python3
"""Renders PNG charts from a moe-bench JSON report (schema v1).

Usage: reports/plot.py RESULTS.json [--out DIR]

Writes <stem>_throughput.png, <stem>_speedups.png, <stem>_latency.png, <stem>_roofline.png and
<stem>_crosslang.png (speed-ups over the numpy and torch peers; empty without them) next to the
report (or into DIR). Needs Debian's python3-matplotlib.
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


def plot_throughput(report, path):
    results = ok_results(report)
    cases = list(dict.fromkeys(case_label(r["case"]) for r in results))
    impls = list(dict.fromkeys(r["impl"] for r in results))
    width = 0.8 / max(len(impls), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(cases)), 4.5))
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
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=impl)
    ax.set_xticks([c + width * (len(impls) - 1) / 2 for c in range(len(cases))])
    ax.set_xticklabels(cases, rotation=20, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("tokens/s (median, 95% CI)")
    ax.set_title("Throughput per configuration")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_speedups(report, path):
    comps = report["comparisons"]
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.45 * len(comps) + 1)))
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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_latency(report, path):
    results = ok_results(report)
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(results)), 4.5))
    if results:
        data = [[s * 1e3 for s in r["samples_s"]] for r in results]
        ax.boxplot(data, showfliers=True)
        ax.set_xticks(range(1, len(results) + 1))
        ax.set_xticklabels(["{}\n{}".format(r["impl"], case_label(r["case"])) for r in results],
                           rotation=30, ha="right", fontsize=7)
        ax.set_yscale("log")
    ax.set_ylabel("ms per call (every sample; outliers shown)")
    ax.set_title("Latency distributions")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_roofline(report, path):
    peaks = report["context"]["peaks"]
    fig, ax = plt.subplots(figsize=(7, 5))
    results = ok_results(report)
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
            ax.scatter([p[0] for p in pts], [p[1]["derived"]["gflops"] for p in pts], label=impl)
            for x, r in pts:
                ax.annotate("T={}".format(r["case"]["tokens"]), (x, r["derived"]["gflops"]),
                            fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel("operational intensity (FLOP/byte, design's counts)")
    ax.set_ylabel("GFLOP/s (median)")
    ax.set_title("Roofline")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_crosslang(report, path):
    """Speed-up of every implementation over the Python peers, with interval bars."""
    comps = [c for c in report["comparisons"] if c["b"] in ("numpy", "torch")]
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(comps) + 2), 4.5))
    if comps:
        labels = ["{}\n{} over {}".format(case_label(c["case"]), c["a"], c["b"]) for c in comps]
        xs = range(len(comps))
        ratios = [c["speedup"] for c in comps]
        lo = [c["speedup"] - c["speedup_ci"][0] for c in comps]
        hi = [c["speedup_ci"][1] - c["speedup"] for c in comps]
        colors = ["tab:blue" if c["b"] == "numpy" else "tab:orange" for c in comps]
        ax.bar(xs, ratios, yerr=[lo, hi], capsize=3, color=colors)
        ax.set_xticks(list(xs))
        ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=7)
        ax.set_yscale("log")
    ax.axhline(1.0, color="black", linewidth=1)
    ax.set_ylabel("speed-up over the peer (95% CI)")
    ax.set_title("Cross-language comparison (blue: over numpy, orange: over torch)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    for name, fn in (("throughput", plot_throughput), ("speedups", plot_speedups),
                     ("latency", plot_latency), ("roofline", plot_roofline),
                     ("crosslang", plot_crosslang)):
        path = os.path.join(out, "{}_{}.png".format(stem, name))
        fn(report, path)
        print(path)


if __name__ == "__main__":
    main()
