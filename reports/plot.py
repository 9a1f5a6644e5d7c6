#!/usr/bin/python3
"""Renders PNG charts from a moe-bench JSON report (schema v1).

Usage: reports/plot.py RESULTS.json [--out DIR]

Writes, next to the report (or into DIR), each chart at most 1920 x 1080 pixels:
  <stem>_speedups.png    ours (cpu*, cuda*) over each baseline: a grid of cases x pairs, each
                         cell the speed-up and its 95% interval, coloured by the verdict
  <stem>_crosslang.png   tokens/s of ours and the Python peers (numpy, torch, ipex, hf, torch_*)
                         side by side per case, log scale
  <stem>_throughput.png  the same for every implementation in the report
  <stem>_latency.png     every sample, boxes grouped by case, one colour per implementation
  <stem>_roofline.png    the measured ceilings per data type, points by implementation
  <stem>_dashboard.png   all of it on one 1920 x 1080 page, with expert-parallel stage times
                         when the report holds them
A `serve` report gets <stem>_serving.png (P99 latency against the rate served) instead.
docs/charts.md shows each chart. Needs Debian's python3-matplotlib.

The functions before the drawing section choose what is drawn (pairs, labels, cells, ceilings)
from the report alone; tests/reports/plot_test.py checks them.
"""
import argparse
import json
import math
import os
import sys

# Selection: pure functions of the report, no matplotlib.

PYTHON_PEERS = ("numpy", "torch", "ipex", "hf")
# The standard workloads (lib/src/presets.cpp): (experts, top_k, d_model, d_ff) -> name.
WORKLOADS = {(8, 2, 1024, 4096): "A", (64, 8, 2048, 1024): "B"}
DEFAULT_ROUTER = "softmax,renorm"


def is_ours(impl):
    """moe-bench's own kernels: `cpu`, `cuda` and their forced variants (`cpu_avx2`, ...)."""
    return impl.startswith(("cpu", "cuda"))


def is_python_peer(impl):
    return impl in PYTHON_PEERS or impl.startswith("torch_")


def impl_name(result):
    """The implementation as comparisons name it; an expert-parallel result adds its placement
    and exchange ("cpu (load-aware +2, window)"), as reports/SCHEMA.md describes."""
    ep = result.get("ep")
    if not ep:
        return result["impl"]
    placement = ep["placement"] + (" +{}".format(ep["replicas"]) if ep.get("replicas") else "")
    return "{} ({}, {})".format(result["impl"], placement, ep.get("exchange", "alltoallv"))


def case_key(case):
    return json.dumps(case, sort_keys=True)


def loose_key(case):
    """The case without its thread count: expert-parallel comparisons carry the threads per
    rank where their results carry the threads of the launch."""
    return case_key({k: v for k, v in case.items() if k != "threads"})


def ok_results(report):
    return [r for r in report["results"] if r["status"] == "ok"]


def cases_of(results):
    """Every case of these results, in the order they first hold it."""
    seen = {}
    for r in results:
        seen.setdefault(case_key(r["case"]), r["case"])
    return list(seen.values())


def cases_in_order(report):
    """Every case with an ok result, in the order the report first holds it."""
    return cases_of(ok_results(report))


def labels_by_key(cases):
    return dict(zip((case_key(c) for c in cases), case_labels(cases)))


def impls_in_order(results):
    """Implementation names, ours first, then the others in the order the report holds them."""
    names = list(dict.fromkeys(impl_name(r) for r in results))
    return [n for n in names if is_ours(n)] + [n for n in names if not is_ours(n)]


def shape_name(case):
    """"A", "B", the preset ("mixtral-8x7b"), or the shape ("E8k2 1024x4096": d_model x d_ff)."""
    if case.get("preset"):
        return case["preset"]
    dims = (case["experts"], case["top_k"], case["d_model"], case["d_ff"])
    standard = (case.get("shared_experts", 0) == 0 and case.get("activation") == "swiglu"
                and case.get("router", {}).get("label", DEFAULT_ROUTER) == DEFAULT_ROUTER)
    if standard and dims in WORKLOADS:
        return WORKLOADS[dims]
    name = "E{}k{} {}x{}".format(*dims)
    if case.get("shared_experts"):
        name += "+{}s".format(case["shared_experts"])
    if case.get("activation", "swiglu") != "swiglu":
        name += " " + case["activation"]
    label = case.get("router", {}).get("label", DEFAULT_ROUTER)
    if label != DEFAULT_ROUTER:
        name += " " + label
    return name


def case_labels(cases):
    """Short labels, one per case and all different: "A/512 bf16", "mixtral-8x7b/4".

    The data type is named when the cases are not all f32; quantized weights ("A/1 int8") and
    routing and capacity when they are
    not the defaults; threads and then the seed only where two cases would otherwise share a
    label; a last "#n" only if even those are equal."""
    show_dtype = any(c.get("dtype", "f32") != "f32" for c in cases)

    def base(c):
        label = "{}/{}".format(shape_name(c), c["tokens"])
        if show_dtype:
            label += " " + c.get("dtype", "f32")
        if c.get("weights", "same") != "same":
            label += " " + c["weights"]
        if c.get("routing", "uniform") != "uniform":
            label += " " + c["routing"]
        if c.get("capacity_factor", 0) > 0:
            label += " C{:g}".format(c["capacity_factor"])
        return label

    labels = [base(c) for c in cases]
    for field, fmt in (("threads", " t{}"), ("seed", " s{}")):
        dup = {lab for lab in labels if labels.count(lab) > 1}
        labels = [lab + fmt.format(c.get(field)) if lab in dup else lab
                  for lab, c in zip(labels, cases)]
    dup = {lab for lab in labels if labels.count(lab) > 1}
    counts = {}
    out = []
    for lab in labels:
        if lab in dup:
            counts[lab] = counts.get(lab, 0) + 1
            lab = "{} #{}".format(lab, counts[lab])
        out.append(lab)
    return out


def speedup_pairs(report):
    """(a, b) pairs drawn as speed-ups: ours over a baseline, never one peer over another nor
    one of ours over another; in an expert-parallel report, each placement or exchange over
    the first (b then carries a placement)."""
    pairs = []
    for c in report["comparisons"]:
        a, b = c["a"], c["b"]
        if is_ours(a) and (not is_ours(b) or " (" in b) and (a, b) not in pairs:
            pairs.append((a, b))
    # Grouped by baseline, in the order the baselines first appear.
    bases = list(dict.fromkeys(b for _, b in pairs))
    return sorted(pairs, key=lambda p: bases.index(p[1]))


def speedup_grid(report):
    """Rows: the cases with a drawn pair; columns: speedup_pairs; cells[(row, col)]: the
    comparison, or absent where that pair was not measured on that case."""
    pairs = speedup_pairs(report)
    index = {p: i for i, p in enumerate(pairs)}
    keys = [case_key(c) for c in cases_in_order(report)]
    loose = {}
    for k in keys:
        loose.setdefault(loose_key(json.loads(k)), []).append(k)
    cells_by_key = {}
    for c in report["comparisons"]:
        col = index.get((c["a"], c["b"]))
        if col is None:
            continue
        key = case_key(c["case"])
        if key not in keys and len(loose.get(loose_key(c["case"]), [])) == 1:
            key = loose[loose_key(c["case"])][0]
        cells_by_key.setdefault(key, {})[col] = c
    rows = [k for k in keys if k in cells_by_key]
    rows += [k for k in cells_by_key if k not in rows]  # compared but no ok result: still drawn
    cases = [json.loads(k) for k in rows]
    cells = {(r, col): comp for r, k in enumerate(rows) for col, comp in cells_by_key[k].items()}
    return cases, pairs, cells


def pair_label(a, b, sep=" over "):
    """"cpu over blas"; expert-parallel variants of one implementation by their placement and
    exchange alone ("load-aware +2, window over contiguous, alltoallv")."""
    ia, _, va = a.partition(" (")
    ib, _, vb = b.partition(" (")
    if va and vb and ia == ib:
        return va.rstrip(")") + sep + vb.rstrip(")")
    return a + sep + b


def pair_summary(report):
    """Per drawn pair: (a, b, geometric mean speed-up, cases faster, slower, undecided)."""
    cases, pairs, cells = speedup_grid(report)
    out = []
    for col, (a, b) in enumerate(pairs):
        comps = [comp for (r, c), comp in sorted(cells.items()) if c == col]
        verdicts = [verdict(comp) for comp in comps]
        geo = math.exp(sum(math.log(comp["speedup"]) for comp in comps) / len(comps))
        out.append((a, b, geo, verdicts.count("faster"), verdicts.count("slower"),
                    verdicts.count("undecided")))
    return out


def verdict(comp):
    """"faster" when the whole interval is above 1, "slower" when it is below, else
    "undecided"."""
    lo, hi = comp["speedup_ci"]
    if comp["faster_with_confidence"] or lo > 1:
        return "faster"
    if hi < 1:
        return "slower"
    return "undecided"


def format_ratio(x):
    """Three significant figures at most, never more than 5 characters below 1000."""
    if x >= 100:
        return "{:.0f}".format(x)
    if x >= 10:
        return "{:.1f}".format(x)
    return "{:.2f}".format(x)


def cell_text(comp):
    lo, hi = comp["speedup_ci"]
    return "{}x [{}, {}]".format(format_ratio(comp["speedup"]), format_ratio(lo),
                                 format_ratio(hi))


def crosslang_impls(report):
    """Ours and the Python peers that have an ok result; empty without a peer."""
    impls = impls_in_order(ok_results(report))
    if not any(is_python_peer(i) for i in impls):
        return []
    return [i for i in impls if is_ours(i) or is_python_peer(i)]


def facets(n, per_row):
    """Splits n items into the fewest rows of at most per_row, as even as possible:
    returns (start, stop) per row. 60 items at 20 a row: three rows of 20; 21: 11 and 10."""
    if n == 0:
        return []
    rows = math.ceil(n / per_row)
    size, extra = divmod(n, rows)
    out, start = [], 0
    for i in range(rows):
        stop = start + size + (1 if i < extra else 0)
        out.append((start, stop))
        start = stop
    return out


def throughput(result):
    """(median tokens/s, low, high): a slower time bound is a lower throughput bound."""
    tokens = result["case"]["tokens"]
    lo_s, hi_s = result["stats"]["median_ci_s"]
    return tokens / result["stats"]["median_s"], tokens / hi_s, tokens / lo_s


def by_case_and_impl(results):
    return {(case_key(r["case"]), impl_name(r)): r for r in results}


DEVICE_PREFIXES = ("cuda", "cublas", "torch_cuda", "torch_grouped_mm")


def runs_on_device(impl):
    return impl.startswith(DEVICE_PREFIXES)


def roofline_ceilings(report, results):
    """The ceilings the run measured for these results, one per (where, compute peak, threads):
    [{name, gbytes_per_s, gflops (None: bandwidth only), dtypes, device}]. CPU f32 and f16 use
    the FP32 FMA peak, bf16 the BF16 peak where one was measured; device results use the device
    copy bandwidth and, for 16-bit types, its BF16 GEMM peak (reports/SCHEMA.md)."""
    ctx = report["context"]
    by_threads = {p["threads"]: p for p in ctx.get("peaks_by_threads") or []}
    ceilings = {}
    for r in results:
        dtype = r["case"].get("dtype", "f32")
        if runs_on_device(r["impl"]):
            dev = ctx.get("device_peaks")
            if not dev:
                continue
            sixteen = dtype in ("bf16", "f16")
            key = ("device", sixteen, None)
            name = "{} {}".format(dev.get("device", "device"),
                                  "16-bit tensor cores" if sixteen else "f32 (bandwidth only)")
            spec = (name, dev["copy_gbytes_per_s"], dev["bf16_tflops"] * 1e3 if sixteen else None)
        else:
            peaks = by_threads.get(r["case"].get("threads")) or ctx.get("peaks")
            if not peaks:
                continue
            bf16 = dtype == "bf16" and peaks.get("bf16_gflops", 0) > 0
            key = ("cpu", bf16, peaks["threads"])
            name = "CPU {}, {} threads".format("BF16 dot product" if bf16 else
                                              "FP32 FMA ({})".format(peaks.get("fma_isa", "?")),
                                              peaks["threads"])
            spec = (name, peaks["read_gbytes_per_s"],
                    peaks["bf16_gflops"] if bf16 else peaks["fp32_gflops"])
        entry = ceilings.setdefault(key, {"name": spec[0], "gbytes_per_s": spec[1],
                                          "gflops": spec[2], "dtypes": [],
                                          "device": key[0] == "device"})
        if dtype not in entry["dtypes"]:
            entry["dtypes"].append(dtype)
    return list(ceilings.values())


def intensity(result):
    d = result["derived"]
    return d["gflops"] / d["gbytes_per_s"] if d.get("gbytes_per_s") else None


def roofline_labels(cases, results, width=24):
    """One label per distinct operational intensity (every implementation of a case sits at
    the same intensity, the design's FLOP and byte counts): [(intensity, "A/1, A/32")],
    ordered by intensity."""
    labels = labels_by_key(cases)
    at = {}
    for r in results:
        x = intensity(r)
        if x is None:
            continue
        # Intensities equal to 4 significant figures share one label.
        names = at.setdefault(float("{:.4g}".format(x)), [])
        label = labels[case_key(r["case"])]
        if label not in names:
            names.append(label)
    return [(x, wrap_names(names, width)) for x, names in sorted(at.items())]


def wrap_names(names, width=24):
    """Names joined by commas, on as many lines of about `width` characters as they need."""
    lines = []
    for name in names:
        if lines and len(lines[-1]) + 2 + len(name) <= width:
            lines[-1] += ", " + name
        else:
            lines.append(name)
    return "\n".join(lines)


def spread(positions, widths, lo, hi):
    """Moves sorted 1-D label centres apart so that labels `widths` wide (one number for all,
    or one each) do not overlap, staying within [lo, hi] and as near the originals as possible
    (a cluster of touching labels is centred on its members). Returns the new centres, or None
    when the labels need more room than hi - lo."""
    n = len(positions)
    if n == 0:
        return []
    w = list(widths) if isinstance(widths, (list, tuple)) else [widths] * n
    # offset[i]: where label i sits relative to label 0 when all are packed edge to edge.
    offset = [0.0]
    for i in range(1, n):
        offset.append(offset[-1] + (w[i - 1] + w[i]) / 2)
    if offset[-1] > hi - lo:
        return None
    # Pool adjacent violators: a cluster [start, stop) sits at the mean of p_i - offset_i.
    clusters = []
    for i in range(n):
        clusters.append([i, i + 1, positions[i] - offset[i]])
        while len(clusters) > 1:
            (a0, _, at), (_, stop, bt) = clusters[-2], clusters[-1]
            if at <= bt:
                break
            mean = sum(positions[k] - offset[k] for k in range(a0, stop)) / (stop - a0)
            clusters[-2:] = [[a0, stop, mean]]
    out = [0.0] * n
    for start, stop, t in clusters:
        for k in range(start, stop):
            out[k] = t + offset[k]
    # Keep inside [lo, hi]: push from the ends, keeping the spacing.
    for i in range(n):
        out[i] = max(out[i], lo + offset[i] - offset[0])
    for i in reversed(range(n)):
        out[i] = min(out[i], hi - (offset[-1] - offset[i]))
    return out


def ep_stages(report):
    """Expert-parallel stage times per result, in pipeline order: [(case label, impl,
    [(stage, seconds)])]. Dispatch and combine are split into their exchange and the rest
    ("dispatch (local)": dispatch less its exchange, both medians, so only near the local
    part's own median)."""
    results = [r for r in ok_results(report) if r.get("ep")]
    labels = labels_by_key(cases_of(results))
    out = []
    for r in results:
        st = r["ep"]["stages_s"]

        def local(whole):
            return max(0.0, st.get(whole, 0.0) - st.get(whole + "_exchange", 0.0))
        stages = [("route", st.get("route", 0.0)), ("dispatch (local)", local("dispatch")),
                  ("dispatch_exchange", st.get("dispatch_exchange", 0.0)),
                  ("compute", st.get("compute", 0.0)),
                  ("combine_exchange", st.get("combine_exchange", 0.0)),
                  ("combine (local)", local("combine"))]
        out.append((labels[case_key(r["case"])], impl_name(r), stages))
    return out


# Drawing.

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as ticker  # noqa: E402
import matplotlib.transforms as mtransforms  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402

DPI = 100
MAX_W, MAX_H = 19.2, 10.8  # inches at DPI: 1920 x 1080 pixels
FONT = 9
# Fixed colours, so that an implementation has the same colour in every chart of every report.
COLOURS = {
    "cpu": "#1f77b4", "cuda": "#1f77b4", "blas": "#7f7f7f", "naive": "#bcbd22",
    "numpy": "#ff7f0e", "torch": "#d62728", "ipex": "#9467bd", "hf": "#8c564b",
    "cublas": "#7f7f7f", "torch_cuda": "#d62728", "torch_grouped_mm": "#e377c2",
    "cuda_gemm": "#17becf", "cuda_gemv": "#2ca02c", "cpu_avx512": "#17becf",
    "cpu_avx2": "#2ca02c", "cpu_generic": "#aec7e8", "cpu_avx512_bf16": "#98df8a",
    "cpu_amx": "#c5b0d5",
}
EXTRA = ("#17becf", "#2ca02c", "#e377c2", "#8c564b", "#bcbd22", "#aec7e8", "#ffbb78",
         "#98df8a", "#ff9896", "#c5b0d5")
VERDICT_COLOURS = {"faster": "#a6dba0", "slower": "#f4a582", "undecided": "#e0e0e0"}
DTYPE_MARKERS = {"f32": "o", "bf16": "s", "f16": "^"}

plt.rcParams.update({"font.size": FONT, "axes.titlesize": FONT + 2, "legend.fontsize": FONT,
                     "axes.spines.top": False, "axes.spines.right": False})


def colours(impls):
    """A colour per implementation: the fixed one, else the next unused extra colour."""
    out, used = {}, set()
    for impl in impls:
        c = COLOURS.get(impl)
        if c is None or c in used:
            c = next((e for e in EXTRA if e not in used), EXTRA[len(out) % len(EXTRA)])
        out[impl] = c
        used.add(c)
    return out


def peer_label(report, impl):
    """An implementation's name, with the version of a Python peer ("torch 2.8.0")."""
    if not is_python_peer(impl):
        return impl
    for r in ok_results(report):
        if r["impl"] == impl:
            for part in r.get("notes", "").split(", "):
                key, _, version = part.partition(" ")
                if key == impl.split("_")[0] and version and version[0].isdigit():
                    return "{} {}".format(impl, version)
    return impl


def impl_legend(fig_or_ax, report, impls, colour, **kw):
    handles = [Patch(color=colour[i], label=peer_label(report, i)) for i in impls]
    if handles:
        fig_or_ax.legend(handles=handles, ncol=min(len(impls), 8), frameon=False, **kw)


def tick_labels(labels, column_px, fontsize):
    """Tick text and rotation for per-case columns column_px wide: the label itself, else on
    two lines at its spaces, else turned upright."""
    char_px = fontsize * 0.6 * DPI / 72
    if max((len(lab) for lab in labels), default=0) * char_px <= column_px:
        return labels, 0
    wrapped = [lab.replace(" ", "\n", 1) for lab in labels]
    longest = max(len(part) for lab in wrapped for part in lab.split("\n"))
    if longest * char_px <= column_px:
        return wrapped, 0
    return labels, 90


def draw_case_bars(ax, results, cases, labels, impls, colour, column_px):
    """Grouped bars, one group per case, one bar per implementation, 95% interval whiskers."""
    table = by_case_and_impl(results)
    width = 0.8 / max(len(impls), 1)
    for j, impl in enumerate(impls):
        xs, ys, lo, hi = [], [], [], []
        for i, c in enumerate(cases):
            r = table.get((case_key(c), impl))
            if r is None:
                continue
            t, t_lo, t_hi = throughput(r)
            xs.append(i - 0.4 + width * (j + 0.5))
            ys.append(t)
            lo.append(t - t_lo)
            hi.append(t_hi - t)
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=0, color=colour[impl],
               error_kw={"elinewidth": 0.8, "ecolor": "black"})
    finish_case_axis(ax, cases, labels, column_px)
    ax.set_yscale("log")
    plain_log_ticks(ax)
    ax.set_ylabel("tokens/s")


def draw_case_boxes(ax, results, cases, labels, impls, colour, column_px):
    """Every sample of every result, boxes grouped by case, coloured by implementation."""
    table = by_case_and_impl(results)
    width = 0.8 / max(len(impls), 1)
    for j, impl in enumerate(impls):
        data, xs = [], []
        for i, c in enumerate(cases):
            r = table.get((case_key(c), impl))
            if r is not None and r["samples_s"]:
                data.append([s * 1e3 for s in r["samples_s"]])
                xs.append(i - 0.4 + width * (j + 0.5))
        if not data:
            continue
        boxes = ax.boxplot(data, positions=xs, widths=width * 0.85, patch_artist=True,
                           manage_ticks=False, flierprops={"markersize": 2},
                           medianprops={"color": "black", "linewidth": 1})
        for box in boxes["boxes"]:
            box.set_facecolor(colour[impl])
            box.set_linewidth(0.6)
    finish_case_axis(ax, cases, labels, column_px)
    ax.set_yscale("log")
    plain_log_ticks(ax)
    ax.set_ylabel("ms per call")


def short_number(v):
    """Tick text: 0.4, 25, 6k, 1.5M."""
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if v >= scale:
            return "{:g}{}".format(round(v / scale, 3), suffix)
    return "{:g}".format(float("{:.3g}".format(v)))


def plain_log_ticks(ax, which="y"):
    """Plain numbers on log axes, and minor ticks labelled only when an axis spans less than a
    decade (else it would show no number at all)."""
    for name in which:
        axis, limits = (ax.yaxis, ax.get_ylim) if name == "y" else (ax.xaxis, ax.get_xlim)

        def minor(v, _, limits=limits):
            lo, hi = limits()
            lead = int(round(v / 10 ** math.floor(math.log10(v) + 1e-9)))
            if hi / lo < 3 or (hi / lo < 10 and lead in (2, 3, 5)):
                return short_number(v)
            return ""
        axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: short_number(v)))
        axis.set_minor_formatter(ticker.FuncFormatter(minor))


def finish_case_axis(ax, cases, labels, column_px):
    ax.set_xlim(-0.5, len(cases) - 0.5)
    for i in range(1, len(cases)):
        ax.axvline(i - 0.5, color="#dddddd", linewidth=0.6, zorder=0)
    ax.grid(axis="y", which="major", color="#eeeeee", linewidth=0.6)
    ax.set_axisbelow(True)
    ax.set_xticks(range(len(cases)))
    text, rotation = tick_labels([labels[case_key(c)] for c in cases], column_px, FONT)
    ax.set_xticklabels(text, rotation=rotation)
    ax.tick_params(axis="x", length=0)


def case_chart_size(n_cases, n_impls):
    """Figure size and facets for a per-case chart: rows of at most 20 cases, width from the
    cases in a row, height from the rows, within 1920 x 1080."""
    rows = facets(n_cases, 20)
    per_row = max((b - a for a, b in rows), default=1)
    width = min(MAX_W, max(7.0, 1.5 + per_row * (0.35 + 0.16 * n_impls)))
    height = min(MAX_H, 1.0 + 3.1 * max(len(rows), 1))
    return (width, height), rows


def faceted_chart(report, results, impls, draw, title, path):
    """A per-case chart in rows of at most 20 cases; a case keeps the label that the whole
    report gives it."""
    cases = cases_of(results)
    labels = labels_by_key(cases)
    colour = colours(impls_in_order(ok_results(report)))
    size, rows = case_chart_size(len(cases), len(impls))
    fig, axes = plt.subplots(max(len(rows), 1), 1, figsize=size, squeeze=False, sharey=True)
    for ax, (a, b) in zip(axes[:, 0], rows):
        column_px = (size[0] - 1.5) * DPI / max(b - a, 1)
        draw(ax, cases[a:b], labels, column_px, colour)
    if not rows:
        axes[0][0].axis("off")
        axes[0][0].text(0.5, 0.5, "no ok result to draw", ha="center",
                        transform=axes[0][0].transAxes)
    top = 1 - 0.65 / size[1]  # title and legend take the top 0.65 inch
    fig.suptitle(title, fontsize=FONT + 3, y=1 - 0.08 / size[1], va="top")
    impl_legend(fig, report, impls, colour, loc="upper center",
                bbox_to_anchor=(0.5, 1 - 0.35 / size[1]))
    fig.tight_layout(rect=(0, 0, 1, top))
    save(fig, path, tight=False)


def plot_throughput(report, path, impls=None, title=None):
    results = [r for r in ok_results(report) if impls is None or impl_name(r) in impls]
    impls = impls or impls_in_order(results)

    def draw(ax, cases, labels, column_px, colour):
        draw_case_bars(ax, results, cases, labels, impls, colour, column_px)

    faceted_chart(report, results, impls, draw,
                  title or "Throughput per case (median tokens/s, 95% interval; log scale)", path)


def plot_crosslang(report, path):
    impls = crosslang_impls(report)
    if not impls:
        fig, ax = plt.subplots(figsize=(7, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, "No Python peer (numpy, torch, ipex, hf) ran in this report.\n"
                "Run them beside ours: moe-bench run --impl cpu,numpy,torch,ipex --json r.json",
                ha="center", va="center")
        save(fig, path)
        return
    plot_throughput(report, path, impls,
                    "Ours and the Python peers per case (median tokens/s, 95% interval; log scale)")


def plot_latency(report, path):
    results = ok_results(report)
    impls = impls_in_order(results)

    def draw(ax, cases, labels, column_px, colour):
        draw_case_boxes(ax, results, cases, labels, impls, colour, column_px)

    faceted_chart(report, results, impls, draw,
                  "Latency per case (every sample; box: quartiles, whiskers 1.5 IQR; log scale)",
                  path)


def draw_grid(ax, cases, pairs, cells, labels, fontsize):
    """The speed-up grid: a row per case, a column per pair."""
    for (r, c), comp in cells.items():
        ax.add_patch(Rectangle((c, r), 1, 1, facecolor=VERDICT_COLOURS[verdict(comp)],
                               edgecolor="white", linewidth=1.5))
        ax.text(c + 0.5, r + 0.5, cell_text(comp), ha="center", va="center", fontsize=fontsize)
    for r in range(len(cases)):
        for c in range(len(pairs)):
            if (r, c) not in cells:
                ax.text(c + 0.5, r + 0.5, "not compared", ha="center", va="center",
                        fontsize=fontsize - 1, color="#999999")
    ax.set_xlim(0, len(pairs))
    ax.set_ylim(len(cases), 0)
    ax.set_yticks([r + 0.5 for r in range(len(cases))])
    ax.set_yticklabels(labels, fontsize=fontsize)
    ax.set_xticks([c + 0.5 for c in range(len(pairs))])
    ax.set_xticklabels([pair_label(a, b, "\nover ") for a, b in pairs], fontsize=fontsize)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for s in ax.spines.values():
        s.set_visible(False)


def verdict_legend(fig, **kw):
    handles = [Patch(color=VERDICT_COLOURS["faster"], label="faster with confidence (interval above 1)"),
               Patch(color=VERDICT_COLOURS["slower"], label="slower with confidence (interval below 1)"),
               Patch(color=VERDICT_COLOURS["undecided"], label="undecided (interval holds 1)")]
    kw.setdefault("ncol", 3)
    return fig.legend(handles=handles, frameon=False, **kw)


def grid_blocks(n_rows, n_pairs):
    """Row blocks drawn side by side: at most 30 rows a block, and as many blocks as fit
    1920 pixels at about 2.3 inches a pair column."""
    fit = max(1, int(MAX_W // (1.6 + 1.6 * n_pairs)))
    blocks = facets(n_rows, max(30, math.ceil(n_rows / fit)))
    return blocks


def plot_speedups(report, path):
    cases, pairs, cells = speedup_grid(report)
    if not pairs:
        fig, ax = plt.subplots(figsize=(7, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, "No speed-up of ours (cpu*, cuda*) over a baseline in this report.",
                ha="center", va="center")
        save(fig, path)
        return
    labels = case_labels(cases)
    blocks = grid_blocks(len(cases), len(pairs))
    rows = max(b - a for a, b in blocks)
    width = min(MAX_W, max(6.5, len(blocks) * (1.6 + 1.6 * len(pairs)) + 0.4))
    legend_rows = 1 if width >= 9.5 else 3
    height = min(MAX_H, 1.6 + 0.2 * legend_rows + 0.27 * rows)
    fig, axes = plt.subplots(1, len(blocks), figsize=(width, height), squeeze=False)
    for ax, (a, b) in zip(axes[0], blocks):
        sub = {(r - a, c): comp for (r, c), comp in cells.items() if a <= r < b}
        draw_grid(ax, cases[a:b], pairs, sub, labels[a:b], FONT - 0.5)
    fig.suptitle("Speed-up of ours over each baseline{}(ratio of medians [95% bootstrap interval])"
                 .format(" " if legend_rows == 1 else "\n"), fontsize=FONT + 3)
    verdict_legend(fig, loc="lower center", bbox_to_anchor=(0.5, 0.0), ncol=3 // legend_rows)
    fig.tight_layout(rect=(0, (0.25 + 0.2 * legend_rows) / height, 1,
                           1 - (0.2 + 0.2 * (legend_rows > 1)) / height))
    save(fig, path, tight=False)


def draw_roofline(ax, report, results, colour, fontsize):
    """Ceilings per data type, points coloured by implementation and shaped by data type;
    returns the legend (right of the axes), None without a result to place. label_roofline
    then names the cases."""
    results = [r for r in results if intensity(r)]
    ceilings = roofline_ceilings(report, results)
    if not results:
        ax.text(0.5, 0.5, "no result to place", ha="center", transform=ax.transAxes)
        return None
    xs = [intensity(r) for r in results]
    knees = [c["gflops"] / c["gbytes_per_s"] for c in ceilings if c["gflops"]]
    lo, hi = min(xs + knees) / 3, max(xs + knees) * 3
    grid = [lo * (hi / lo) ** (i / 300) for i in range(301)]
    styles = ["-", "--", "-.", ":"]
    handles = []
    for i, c in enumerate(ceilings):
        ys = [min(c["gflops"], c["gbytes_per_s"] * x) if c["gflops"] else c["gbytes_per_s"] * x
              for x in grid]
        line, = ax.plot(grid, ys, color="black", linestyle=styles[i % 4], linewidth=1.2)
        peak = ("" if not c["gflops"] else "{:.0f} GFLOP/s, ".format(c["gflops"])
                if c["gflops"] < 1e4 else "{:.0f} TFLOP/s, ".format(c["gflops"] / 1e3))
        handles.append(Line2D([], [], color="black", linestyle=styles[i % 4],
                              label="{}\n{}{:.0f} GB/s; {}".format(
                                  c["name"], peak, c["gbytes_per_s"], ", ".join(c["dtypes"]))))
    impls = impls_in_order(results)
    for impl in impls:
        for dtype, marker in DTYPE_MARKERS.items():
            pts = [r for r in results if impl_name(r) == impl and r["case"].get("dtype") == dtype]
            if pts:
                ax.scatter([intensity(r) for r in pts], [r["derived"]["gflops"] for r in pts],
                           color=colour[impl], marker=marker, s=28, edgecolor="black",
                           linewidth=0.4, zorder=3)
    dtypes = [d for d in DTYPE_MARKERS if any(r["case"].get("dtype") == d for r in results)]
    handles += [Line2D([], [], color=colour[i], marker="o", linestyle="", label=peer_label(report, i))
                for i in impls]
    if len(dtypes) > 1:
        handles += [Line2D([], [], color="grey", marker=DTYPE_MARKERS[d], linestyle="", label=d)
                    for d in dtypes]
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    plain_log_ticks(ax, "xy")
    ax.set_xlabel("operational intensity (FLOP/byte, the design's counts)")
    ax.set_ylabel("GFLOP/s (median)")
    ax.grid(which="major", color="#eeeeee", linewidth=0.6)
    return ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                     fontsize=fontsize, frameon=False)


def label_band_in(labels, fontsize):
    """Height in inches of the upright labels above the roofline (their longest line)."""
    longest = max((len(line) for _, t in labels for line in t.split("\n")), default=0)
    return longest * fontsize * 0.6 / 72 + 0.2


def label_roofline(ax, labels, fontsize):
    """Upright case labels above the axes at their intensity, spread apart with a leader line
    where they would overlap. Returns False (and draws none) when they cannot all fit."""
    fig = ax.figure
    fig.canvas.draw()
    bbox = ax.get_window_extent()
    line_px = fontsize * 1.3 * fig.dpi / 72
    px = [ax.transData.transform((x, 1))[0] for x, _ in labels]
    new = spread(px, [line_px * t.count("\n") + line_px for _, t in labels], bbox.x0, bbox.x1)
    if new is None:
        return False
    inv = ax.transData.inverted()
    trans = ax.get_xaxis_transform()  # x in data, y in axes fraction
    above = mtransforms.offset_copy(trans, fig=fig, y=10, units="points")
    for (x, text), p in zip(labels, new):
        ax.annotate(text, xy=(x, 1.0), xycoords=trans, xytext=(inv.transform((p, 0))[0], 1.0),
                    textcoords=above, rotation=90, ha="center", va="bottom", fontsize=fontsize,
                    multialignment="left", annotation_clip=False,
                    arrowprops={"arrowstyle": "-", "color": "#999999", "linewidth": 0.6,
                                "shrinkA": 0, "shrinkB": 0})
        ax.axvline(x, color="#dddddd", linewidth=0.6, zorder=0)
    return True


def plot_roofline(report, path):
    results = ok_results(report)
    colour = colours(impls_in_order(results))
    labels = roofline_labels(cases_in_order(report), results)
    width = min(MAX_W, max(11.0, 5.0 + len(labels) * 0.2))
    label_in = label_band_in(labels, FONT)
    height = min(MAX_H, 6.5 + label_in)
    fig, ax = plt.subplots(figsize=(width, height))
    draw_roofline(ax, report, results, colour, FONT)
    title = ("Roofline: the ceilings this run measured" if roofline_ceilings(report, results)
             else "Roofline: this run measured no peak (points only)")
    ax.set_title(title, pad=label_in * 72 + 10)
    fig.tight_layout()
    if labels and not label_roofline(ax, labels, FONT):
        fig.text(0.01, 0.01, "{} cases: too many to label here".format(len(labels)))
    save(fig, path, tight=False)


def draw_ep(ax, report, fontsize):
    """Expert-parallel stage times, stacked, one bar per (case, placement)."""
    rows = ep_stages(report)
    names = list(dict.fromkeys(s for _, _, st in rows for s, _ in st))
    palette = plt.get_cmap("Set2").colors
    left = [0.0] * len(rows)
    for k, name in enumerate(names):
        widths = [dict(st).get(name, 0.0) * 1e3 for _, _, st in rows]
        ax.barh(range(len(rows)), widths, left=left, color=palette[k % len(palette)], label=name)
        left = [a + b for a, b in zip(left, widths)]
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(["{}  {}".format(c, i.split(" (", 1)[-1].rstrip(")")) for c, i, _ in rows],
                       fontsize=fontsize)
    ax.invert_yaxis()
    ax.set_xlim(0, max(left, default=1) * 1.45)
    ax.set_xlabel("ms per step (median of the slowest rank)")
    ax.set_title("Expert-parallel stages")
    ax.legend(fontsize=fontsize, loc="lower right", framealpha=0.9)


def draw_serving(ax, report, fontsize):
    """`serve`: P99 latency against the rate served, one curve per implementation, with the
    P99 interval as error bars and the SLO drawn."""
    results = [r for r in ok_results(report) if r.get("serving")]
    impls = impls_in_order(results)
    colour = colours(impls)
    slo = None
    for impl in impls:
        pts = sorted((r["serving"]["achieved_rps"], r["serving"]["latency_s"]["p99"],
                      r["serving"]["p99_ci_s"]) for r in results if impl_name(r) == impl)
        x = [p[0] for p in pts]
        y = [p[1] * 1e3 for p in pts]
        err = [[max(0.0, p[1] - p[2][0]) * 1e3 for p in pts],
               [max(0.0, p[2][1] - p[1]) * 1e3 for p in pts]]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, color=colour[impl], label=impl)
        slo = results[0]["serving"]["slo_s"]
    if slo:
        ax.axhline(slo * 1e3, color="grey", linestyle="--", label="SLO {:.3g} ms".format(slo * 1e3))
    ax.set_xlabel("requests served per second")
    ax.set_ylabel("P99 latency (ms, 95% interval)")
    ax.set_yscale("log")
    ax.set_title("Latency under load")
    ax.legend(fontsize=fontsize)


def plot_serving(report, path):
    fig, ax = plt.subplots(figsize=(9, 5.5))
    draw_serving(ax, report, FONT)
    save(fig, path)


def dashboard_layout(report):
    """The dashboard's panels, top to bottom: the speed-up strip, throughput and latency share
    the case columns; the roofline, serving, expert-parallel stages and the speed-up summary
    share the last row."""
    results = ok_results(report)
    top = (["speedups"] if speedup_pairs(report) else []) + (
        ["throughput", "latency"] if results else [])
    bottom = (["roofline"] if results else []) + (
        ["serving"] if any(r.get("serving") for r in results) else []) + (
        ["ep"] if any(r.get("ep") for r in results) else [])
    if speedup_pairs(report) and len(bottom) == 1:
        bottom.append("summary")
    return top, bottom


def plot_dashboard(report, path):
    top, bottom = dashboard_layout(report)
    results = ok_results(report)
    cases = cases_in_order(report)
    labels = labels_by_key(cases)
    impls = impls_in_order(results)
    colour = colours(impls)
    pairs = speedup_pairs(report)
    fig = plt.figure(figsize=(MAX_W, MAX_H))
    heights = ([0.3 + 0.21 * len(pairs)] if "speedups" in top else []) + (
        [2.4, 2.4] if "throughput" in top else []) + ([3.4] if bottom else [])
    if not heights:
        fig.text(0.5, 0.5, "no ok result to draw", ha="center", fontsize=FONT + 4)
        heights = [1]
    longest = max((len(line) for a, b in pairs for line in strip_label(a, b).split("\n")),
                  default=0)
    left = max(0.06, (longest * (FONT - 1) * 0.6 / 72 + 0.35) / MAX_W)
    outer = fig.add_gridspec(len(heights), 1, height_ratios=heights, hspace=0.22, left=left,
                             right=0.99, top=0.9, bottom=0.045)
    row = 0
    column_px = (0.99 - left) * MAX_W * DPI / max(len(cases), 1)
    labels_height = 0
    if "speedups" in top:
        draw_strip(fig.add_subplot(outer[row]), report, cases, column_px)
        row += 1
    if "throughput" in top:
        ax_t = fig.add_subplot(outer[row])
        draw_case_bars(ax_t, results, cases, labels, impls, colour, column_px)
        plt.setp(ax_t.get_xticklabels(), visible=False)
        ax_t.set_title("Throughput (median tokens/s, 95% interval)", loc="left")
        ax_l = fig.add_subplot(outer[row + 1], sharex=ax_t)
        draw_case_boxes(ax_l, results, cases, labels, impls, colour, column_px)
        ax_l.set_title("Latency (every sample)", loc="left")
        labels_height = max(len(lab) for lab in case_labels(cases)) if \
            tick_labels(case_labels(cases), column_px, FONT)[1] else 0
        row += 2
    if bottom:
        # Upright case labels under the latency panel push the last row down.
        inner = outer[row].subgridspec(1, len(bottom), wspace=0.45,
                                       width_ratios=[1.5 if b == "roofline" else 1
                                                     for b in bottom])
        for k, name in enumerate(bottom):
            ax = fig.add_subplot(inner[k])
            if labels_height:
                box = ax.get_position()
                shift = labels_height * FONT * 0.6 / 72 / MAX_H
                ax.set_position([box.x0, box.y0, box.width, box.height - shift])
            if name == "roofline":
                legend = draw_roofline(ax, report, results, colour, FONT - 1)
                if legend is not None:
                    # The legend sits right of the axes: narrow them to keep it off the next
                    # panel.
                    fig.canvas.draw()
                    legend_w = legend.get_window_extent().width / DPI + 0.15
                    box = ax.get_position()
                    ax.set_position([box.x0, box.y0, box.width - legend_w / MAX_W, box.height])
                roofline_labels_or_note(ax, report, results)
            elif name == "serving":
                draw_serving(ax, report, FONT - 1)
            elif name == "ep":
                draw_ep(ax, report, FONT - 1)
            else:
                draw_summary(ax, report)
    ctx = report["context"]
    fig.suptitle("moe-bench {} on {} ({} threads, cache {}): {} cases, {} implementations".format(
        report["tool"]["git_commit"], ctx["cpu"]["model"], ctx["cpu"]["threads"],
        ctx.get("cache_mode", "?"), len(cases), len(impls)), fontsize=FONT + 4, y=0.985)
    impl_legend(fig, report, impls, colour, loc="upper left", bbox_to_anchor=(left, 0.96))
    save(fig, path, tight=False)


def roofline_labels_or_note(ax, report, results):
    """Case labels above the dashboard's roofline, the axes shortened to make room; a note
    instead where they do not fit across."""
    labels = roofline_labels(cases_in_order(report), results, width=14)
    band = label_band_in(labels, FONT - 1)
    box = ax.get_position()
    ax.set_position([box.x0, box.y0, box.width, box.height - band / MAX_H])
    if label_roofline(ax, labels, FONT - 1):
        ax.set_title("Roofline", loc="left", pad=band * 72 + 4)
    else:
        ax.set_position(box)
        ax.set_title("Roofline ({} case labels do not fit here: see _roofline.png)".format(
            len(labels)), loc="left")


def draw_summary(ax, report):
    """Per pair: the geometric mean speed-up over the cases and how many were decided."""
    rows = pair_summary(report)
    ax.axis("off")
    text = [[pair_label(a, b), format_ratio(geo) + "x", str(f), str(s), str(u)]
            for a, b, geo, f, s, u in rows]
    table = ax.table(cellText=text, colLabels=["pair", "geo. mean", "faster", "slower",
                                               "undecided"],
                     loc="upper center", cellLoc="center", colLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(FONT)
    table.auto_set_column_width(list(range(5)))
    table.scale(1, 1.5)
    for (r, c), cell in table.get_celld().items():
        cell.set_edgecolor("#cccccc")
        if r > 0 and c in (2, 3, 4) and text[r - 1][c] != "0":
            cell.set_facecolor(VERDICT_COLOURS[("faster", "slower", "undecided")[c - 2]])
    ax.set_title("Speed-ups over the cases (count of cases by verdict)", loc="left")


def strip_label(a, b):
    """A pair's name on one line, or on two where it is long (expert-parallel variants)."""
    label = pair_label(a, b)
    return label if len(label) <= 26 else pair_label(a, b, "\nover ")


def draw_strip(ax, report, cases, column_px):
    """The speed-up grid turned on its side for the dashboard: a row per pair, a column per
    case (the same columns as throughput and latency), the ratio in each cell."""
    grid_cases, pairs, cells = speedup_grid(report)
    col_of = {case_key(c): i for i, c in enumerate(cases)}
    fontsize = max(6.0, min(FONT, column_px / (5 * 0.6) * 72 / DPI))
    for r, c in ((r, c) for r in range(len(grid_cases)) for c in range(len(pairs))):
        x = col_of.get(case_key(grid_cases[r]))
        comp = cells.get((r, c))
        if x is None:
            continue
        ax.add_patch(Rectangle((x - 0.5, c), 1, 1, edgecolor="white", linewidth=1,
                               facecolor=VERDICT_COLOURS[verdict(comp)] if comp else "#f7f7f7"))
        ax.text(x, c + 0.5, format_ratio(comp["speedup"]) if comp else "-", ha="center",
                va="center", fontsize=fontsize, color="black" if comp else "#999999")
    ax.set_xlim(-0.5, len(cases) - 0.5)
    ax.set_ylim(len(pairs), 0)
    ax.set_yticks([c + 0.5 for c in range(len(pairs))])
    ax.set_yticklabels([strip_label(a, b) for a, b in pairs], fontsize=FONT - 1)
    ax.set_xticks([])
    ax.tick_params(length=0)
    for s in ax.spines.values():
        s.set_visible(False)
    ax.set_title("Speed-up of ours over each baseline (ratio of medians; -: not compared)",
                 loc="left")
    verdict_legend(ax, loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=FONT - 1,
                   borderpad=0.2)


def save(fig, path, tight=True):
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def charts(report):
    """The charts of a report, as (name, function drawing it to a path): a serving run has its
    own, every other run six."""
    if any(r.get("serving") for r in report["results"]):
        return (("serving", plot_serving),)
    return (("speedups", plot_speedups), ("crosslang", plot_crosslang),
            ("throughput", plot_throughput), ("latency", plot_latency),
            ("roofline", plot_roofline), ("dashboard", plot_dashboard))


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
    for name, draw in charts(report):
        path = os.path.join(out, "{}_{}.png".format(stem, name))
        draw(report, path)
        print(path)


if __name__ == "__main__":
    main()
