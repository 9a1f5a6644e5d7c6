#!/usr/bin/python3
"""reports/plot.py's data selection, on the committed example reports and on a synthetic
60-case report built here from one of them (copies of its results under other token counts:
a fixture for the layout, not a measurement).

Run: /usr/bin/python3 tests/reports/plot_test.py [-v] [CLASS ...]   (CTest: ctest -R plot.py)
The Rendering class draws every kind of committed report (report_kind) and the synthetic one,
and checks that each PNG fits 1920 x 1080. With --render DIR, writes the synthetic report and its charts into DIR."""
import contextlib
import copy
import glob
import io
import json
import os
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "reports"))
import plot  # noqa: E402

EXAMPLES = os.path.join(ROOT, "reports", "examples")


def load(*path):
    with open(os.path.join(ROOT, "reports", *path)) as f:
        return json.load(f)


def png_size(path):
    """Width and height from the PNG header (IHDR follows the 8-byte signature)."""
    with open(path, "rb") as f:
        head = f.read(24)
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def synthetic_report(n_cases=60, source=("examples", "cpu-vs-peers.json")):
    """n_cases cases made from the source report's cases: copy j of a case runs j more tokens
    and streams fewer bytes (so that the copies spread over the roofline). Marked synthetic in
    the CPU model, which the dashboard's title shows."""
    base = load(*source)
    cases = plot.cases_in_order(base)
    copies = -(-n_cases // len(cases))
    out = copy.deepcopy(base)
    out["context"]["cpu"]["model"] = "SYNTHETIC: {} cases copied from {}".format(
        n_cases, "/".join(source))
    out["results"], out["comparisons"] = [], []
    made = 0
    for j in range(copies):
        for c in cases:
            if made == n_cases:
                break
            made += 1
            key = plot.case_key(c)
            for r in base["results"]:
                if plot.case_key(r["case"]) == key:
                    r = copy.deepcopy(r)
                    r["case"]["tokens"] += j
                    if r.get("derived"):
                        r["derived"]["gbytes_per_s"] /= 1 + 0.3 * j
                    out["results"].append(r)
            for comp in base["comparisons"]:
                if plot.case_key(comp["case"]) == key:
                    comp = copy.deepcopy(comp)
                    comp["case"]["tokens"] += j
                    out["comparisons"].append(comp)
    return out


class Pairs(unittest.TestCase):
    def test_only_ours_over_a_baseline_is_drawn(self):
        report = load("examples", "example.json")  # naive, numpy, torch, blas, cpu: 48 pairs
        self.assertEqual(plot.speedup_pairs(report),
                         [("cpu", "blas"), ("cpu", "numpy"), ("cpu", "torch")])

    def test_every_pair_of_ours_with_a_peer_is_drawn(self):
        report = load("examples", "cpu-vs-peers.json")  # 65 comparisons among 4 implementations
        self.assertEqual(plot.speedup_pairs(report),
                         [("cpu", "numpy"), ("cpu", "torch"), ("cpu", "ipex")])

    def test_each_cuda_variant_over_cublas_is_its_own_column(self):
        report = load("gpu", "gpu-decode-workload-a.json")
        self.assertEqual(plot.speedup_pairs(report),
                         [("cuda", "cublas"), ("cuda_gemm", "cublas"), ("cuda_gemv", "cublas")])

    def test_expert_parallel_placements_are_compared_with_the_first(self):
        report = load("ep", "exchange-n2.json")
        pairs = plot.speedup_pairs(report)
        self.assertEqual(len(pairs), 3)
        self.assertTrue(all(b == "cpu (contiguous, alltoallv)" for _, b in pairs))
        self.assertEqual(plot.pair_label(*pairs[0]), "contiguous, window over contiguous, alltoallv")

    def test_a_report_without_ours_draws_no_pair(self):
        report = load("examples", "example.json")
        report["comparisons"] = [c for c in report["comparisons"] if c["a"] != "cpu"]
        self.assertEqual(plot.speedup_pairs(report), [])


class Grid(unittest.TestCase):
    def test_ten_cases_against_three_peers_hold_35_cells(self):
        # numpy runs f32 only: its five bf16 cells are "not compared".
        cases, pairs, cells = plot.speedup_grid(load("examples", "cpu-vs-peers.json"))
        self.assertEqual((len(cases), len(pairs), len(cells)), (10, 3, 25))

    def test_one_pair_on_ten_cases_is_ten_cells(self):
        cases, pairs, cells = plot.speedup_grid(load("examples", "cpu-vs-blas.json"))
        self.assertEqual((len(cases), len(pairs), len(cells)), (10, 1, 10))
        self.assertEqual(plot.case_labels(cases)[:3], ["A/1", "A/32", "A/512"])

    def test_expert_parallel_comparisons_find_their_case(self):
        # Their case carries the threads per rank, the results the launch's threads.
        cases, pairs, cells = plot.speedup_grid(load("ep", "exchange-n2.json"))
        self.assertEqual((len(cases), len(pairs), len(cells)), (3, 3, 9))

    def test_sixty_cases_fill_two_blocks_of_thirty_rows(self):
        cases, pairs, cells = plot.speedup_grid(synthetic_report(60))
        self.assertEqual((len(cases), len(pairs)), (60, 3))
        self.assertEqual(plot.grid_blocks(len(cases), len(pairs)), [(0, 30), (30, 60)])

    def test_verdicts_follow_the_interval(self):
        comp = {"speedup_ci": [1.1, 1.3], "faster_with_confidence": True}
        self.assertEqual(plot.verdict(comp), "faster")
        comp = {"speedup_ci": [0.7, 0.9], "faster_with_confidence": False}
        self.assertEqual(plot.verdict(comp), "slower")
        comp = {"speedup_ci": [0.9, 1.1], "faster_with_confidence": False}
        self.assertEqual(plot.verdict(comp), "undecided")

    def test_a_cell_shows_the_ratio_and_its_interval(self):
        comp = {"speedup": 2.0751, "speedup_ci": [2.0421, 12.34]}
        self.assertEqual(plot.cell_text(comp), "2.08x [2.04, 12.3]")

    def test_the_summary_counts_cases_by_verdict(self):
        summary = plot.pair_summary(load("examples", "cpu-vs-peers.json"))
        self.assertEqual([(a, b, f + s + u) for a, b, _, f, s, u in summary],
                         [("cpu", "numpy", 5), ("cpu", "torch", 10), ("cpu", "ipex", 10)])
        self.assertEqual(summary[2][3:], (8, 0, 2))


class Labels(unittest.TestCase):
    def test_standard_workloads_are_named_by_their_letter(self):
        cases = plot.cases_in_order(load("examples", "cpu-vs-peers.json"))
        self.assertEqual(plot.case_labels(cases),
                         ["A/1 f32", "A/1 bf16", "A/32 f32", "A/32 bf16", "A/512 f32",
                          "A/512 bf16", "B/16 f32", "B/16 bf16", "B/1024 f32", "B/1024 bf16"])

    def test_presets_are_named_by_the_preset(self):
        cases = plot.cases_in_order(load("gpu", "gpu-mixtral-prefill.json"))
        self.assertEqual(plot.case_labels(cases), ["mixtral-8x7b/4096 bf16"])

    def test_other_shapes_name_experts_top_k_and_sizes(self):
        case = {"experts": 4, "top_k": 2, "d_model": 16, "d_ff": 8, "tokens": 2, "dtype": "f32",
                "routing": "zipf:1.2", "capacity_factor": 1.25, "activation": "swiglu",
                "shared_experts": 0, "router": {"label": "softmax,renorm"}, "preset": None}
        self.assertEqual(plot.case_labels([case]), ["E4k2 16x8/2 zipf:1.2 C1.25"])

    def test_cases_differing_only_in_threads_name_their_threads(self):
        case = load("examples", "cpu-vs-blas.json")["results"][0]["case"]
        other = dict(case, threads=case["threads"] * 2)
        self.assertEqual(plot.case_labels([case, other]),
                         ["A/1 t{}".format(case["threads"]), "A/1 t{}".format(2 * case["threads"])])

    def test_quantized_weights_are_named_and_same_is_not(self):
        case = load("examples", "cpu-vs-blas.json")["results"][0]["case"]
        self.assertEqual(plot.case_labels([dict(case, weights="same"), dict(case, weights="int8"),
                                           dict(case, weights="q4")]),
                         ["A/1", "A/1 int8", "A/1 q4"])

    def test_sixty_synthetic_cases_have_sixty_labels(self):
        cases = plot.cases_in_order(synthetic_report(60))
        labels = plot.case_labels(cases)
        self.assertEqual(len(set(labels)), 60)
        self.assertLessEqual(max(len(lab) for lab in labels), 12)


class Implementations(unittest.TestCase):
    def test_cross_language_holds_ours_and_the_python_peers(self):
        self.assertEqual(plot.crosslang_impls(load("examples", "example.json")),
                         ["cpu", "numpy", "torch"])
        self.assertEqual(plot.crosslang_impls(load("gpu", "gpu-workload-a.json")),
                         ["cuda", "torch_cuda", "torch_grouped_mm"])
        self.assertEqual(plot.crosslang_impls(load("examples", "cpu-vs-blas.json")), [])

    def test_an_implementation_keeps_its_colour_across_reports(self):
        a = plot.colours(plot.impls_in_order(plot.ok_results(load("examples", "example.json"))))
        b = plot.colours(plot.impls_in_order(
            plot.ok_results(load("examples", "cpu-vs-peers.json"))))
        for impl in ("cpu", "numpy", "torch"):
            self.assertEqual(a[impl], b[impl])
        self.assertEqual(len(set(a.values())), len(a))

    def test_expert_parallel_results_are_named_by_placement(self):
        impls = plot.impls_in_order(plot.ok_results(load("ep", "exchange-n2.json")))
        self.assertEqual(impls, ["cpu (contiguous, alltoallv)", "cpu (contiguous, window)",
                                 "cpu (load-aware +2, alltoallv)", "cpu (load-aware +2, window)"])


class Layout(unittest.TestCase):
    def test_sixty_cases_facet_into_three_rows_of_twenty(self):
        self.assertEqual(plot.facets(60, 20), [(0, 20), (20, 40), (40, 60)])
        self.assertEqual(plot.facets(21, 20), [(0, 11), (11, 21)])
        self.assertEqual(plot.facets(10, 20), [(0, 10)])
        self.assertEqual(plot.facets(0, 20), [])

    def test_per_case_charts_fit_1920_by_1080(self):
        for n in (1, 10, 60):
            (w, h), rows = plot.case_chart_size(n, 5)
            self.assertLessEqual((w * plot.DPI, h * plot.DPI), (1920, 1080))
            self.assertEqual(len(rows), -(-n // 20))

    def test_labels_spread_apart_and_stay_inside(self):
        self.assertEqual(plot.spread([0, 10, 30], 10, 0, 100), [0, 10, 30])
        self.assertEqual(plot.spread([50, 50], 10, 0, 100), [45, 55])
        self.assertEqual(plot.spread([0, 0, 0], 10, 0, 100), [0, 10, 20])
        self.assertEqual(plot.spread([100, 100], 10, 0, 100), [90, 100])
        self.assertIsNone(plot.spread([0, 1, 2], 60, 0, 100))

    def test_a_case_is_labelled_once_on_the_roofline(self):
        report = load("examples", "cpu-vs-peers.json")
        labels = plot.roofline_labels(plot.cases_in_order(report), plot.ok_results(report))
        self.assertEqual(len(labels), 10)
        self.assertEqual([x for x, _ in labels], sorted(x for x, _ in labels))

    def test_ceilings_are_one_per_data_type_that_differs(self):
        report = load("examples", "cpu-vs-torch-bf16.json")
        ceilings = plot.roofline_ceilings(report, plot.ok_results(report))
        self.assertEqual([(c["dtypes"], round(c["gflops"])) for c in ceilings],
                         [(["f32"], 532), (["bf16"], 1062)])
        report = load("gpu", "gpu-workload-a.json")
        ceilings = plot.roofline_ceilings(report, plot.ok_results(report))
        self.assertEqual([(c["device"], c["gflops"] is None) for c in ceilings], [(True, False)])

    def test_expert_parallel_stages_split_dispatch_and_combine_at_their_exchange(self):
        report = load("ep", "ep-n2.json")
        label, impl, stages = plot.ep_stages(report)[0]
        st = plot.ok_results(report)[0]["ep"]["stages_s"]
        self.assertEqual([name for name, _ in stages],
                         ["route", "dispatch (local)", "dispatch_exchange", "compute",
                          "combine_exchange", "combine (local)"])
        self.assertAlmostEqual(sum(t for _, t in stages),
                               st["route"] + st["dispatch"] + st["compute"] + st["combine"])

    def test_the_dashboard_adds_expert_parallel_stages_when_present(self):
        self.assertEqual(plot.dashboard_layout(load("ep", "exchange-n2.json"))[1],
                         ["roofline", "ep"])
        self.assertEqual(plot.dashboard_layout(load("examples", "example.json")),
                         (["speedups", "throughput", "latency"], ["roofline", "summary"]))


def render(path, out):
    """plot.py's command line on one report; returns the PNGs it wrote."""
    sys.argv = ["plot.py", path, "--out", out]
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        plot.main()
    return printed.getvalue().split()


def report_kind(report):
    """What decides which code of plot.py a report reaches: its implementations, whether it holds
    serving or expert-parallel results, its weight formats, dtypes and result statuses. Reports of
    one kind differ in their values and case counts only."""
    results = report["results"]
    return (tuple(sorted({r["impl"] for r in results})),
            any(r.get("serving") for r in results),
            any(r.get("ep") for r in results),
            tuple(sorted({r["case"].get("weights", "same") for r in results})),
            tuple(sorted({r["case"].get("dtype", "f32") for r in results})),
            tuple(sorted({r["status"] for r in results})))


class Kinds(unittest.TestCase):
    def test_reports_differing_in_what_plot_reaches_are_of_other_kinds(self):
        report = load("examples", "example.json")
        kind = report_kind(report)
        self.assertEqual(report_kind(copy.deepcopy(report)), kind)
        for change in ("impl", "weights", "dtype", "status", "serving"):
            other = copy.deepcopy(report)
            r = other["results"][0]
            if change == "impl":
                r["impl"] = "read_floor"
            elif change in ("weights", "dtype"):
                r["case"][change] = {"weights": "q4", "dtype": "bf16"}[change]
            elif change == "status":
                r["status"] = "failed"
            else:
                r["serving"] = {"p99_s": 0.01}
            self.assertNotEqual(report_kind(other), kind, change)


class Rendering(unittest.TestCase):
    def test_every_kind_of_committed_report_renders_within_1920_by_1080(self):
        """Of each kind of committed report (report_kind) the one with the most results draws:
        all its charts through plot.py's command line where it is also its folder's largest
        report, else its dashboard, which draws each panel of the single charts on the report's
        own data, and its cross-language chart, the one chart the dashboard leaves out. (Every
        committed report, 48 of 21 kinds, took 109 s of a CI run on 2 cores, and each new report
        added two seconds.)"""
        reports = sorted(glob.glob(os.path.join(ROOT, "reports", "*", "*.json")))
        loaded = {p: load(*p.split(os.sep)[-2:]) for p in reports}
        reports = [p for p in reports if loaded[p].get("schema_version") == 1]
        self.assertGreater(len(reports), 10)
        largest, of_kind = {}, {}
        for path in reports:
            for table, key in ((largest, os.path.dirname(path)), (of_kind, report_kind(loaded[path]))):
                if key not in table or (len(loaded[path]["results"]) >
                                        len(loaded[table[key]]["results"])):
                    table[key] = path
        self.assertGreater(len(of_kind), 10)
        with tempfile.TemporaryDirectory() as out:
            for path in sorted(set(of_kind.values()) | set(largest.values())):
                report = loaded[path]
                serving = any(r.get("serving") for r in report["results"])
                if path in largest.values():
                    written = render(path, out)
                    self.assertEqual(len(written), 1 if serving else 6, path)
                else:
                    stem = os.path.splitext(os.path.basename(path))[0]
                    written = []
                    for name, draw in plot.charts(report):
                        if name in ("serving", "dashboard", "crosslang"):
                            written.append(os.path.join(out, "{}_{}.png".format(stem, name)))
                            draw(report, written[-1])
                for png in written:
                    self.assertTrue(os.path.exists(png), png)
                    w, h = png_size(png)
                    self.assertTrue(w <= 1920 and h <= 1080, "{}: {} x {}".format(png, w, h))

    def test_a_report_without_an_ok_result_still_draws_every_chart(self):
        report = load("examples", "example.json")
        report["results"], report["comparisons"], report["interrupted"] = [], [], True
        with tempfile.TemporaryDirectory() as out:
            path = os.path.join(out, "interrupted.json")
            with open(path, "w") as f:
                json.dump(report, f)
            self.assertEqual(len(render(path, out)), 6)

    def test_sixty_cases_render_within_1920_by_1080(self):
        with tempfile.TemporaryDirectory() as out:
            path = os.path.join(out, "synthetic-60-cases.json")
            with open(path, "w") as f:
                json.dump(synthetic_report(60), f)
            written = render(path, out)
            self.assertEqual(len(written), 6)
            for png in written:
                w, h = png_size(png)
                self.assertTrue(w <= 1920 and h <= 1080, "{}: {} x {}".format(png, w, h))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--render":
        path = os.path.join(sys.argv[2], "synthetic-60-cases.json")
        with open(path, "w") as f:
            json.dump(synthetic_report(60), f, indent=1)
        sys.argv = ["plot.py", path]
        plot.main()
    else:
        unittest.main()
