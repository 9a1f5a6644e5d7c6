"""The protocol every Python peer shares with moe-bench (see python_peer.cpp).

moe-bench writes the case to a folder: case.json (shape, routing, timing options, the number of
cold-cache layers to rotate) and the inputs as .npy files (x, wg, logit_bias, selection_bias, w1,
w3, w2, ws1, ws3, ws2; with quantized expert weights, case "weights" int8 or q4, the expert
matrices come as NAME_codes.npy and NAME_scales.npy instead). The peer loads them, warms up,
calibrates inner repetitions to the minimum sample time, takes samples until both the minimum count
and the minimum time are met (or the maximum time), and writes samples.json (seconds per call,
versions, BLAS) and its output y.npy and selected experts selected.npy.
"""
import json
import os
import sys
import time


def load_case(folder):
    with open(os.path.join(folder, "case.json")) as f:
        return json.load(f)


def load_inputs(folder, case, convert=lambda a: a):
    """The case's arrays by name (None where the case has none: w3 and ws3 for GELU experts, the
    shared experts' weights without shared experts), each passed through `convert`."""
    import numpy as np

    gated = case["activation"] != "gelu"
    shared = case["shared_width"] > 0
    # Quantized expert weights come as codes and scales (NAME_codes.npy, NAME_scales.npy), which
    # the peers that take them load themselves, and not as floats.
    floats = case.get("weights", "same") == "same"
    present = {"x": True, "wg": True, "logit_bias": True, "selection_bias": True, "w1": floats,
               "w3": floats and gated, "w2": floats, "ws1": floats and shared,
               "ws3": floats and shared and gated, "ws2": floats and shared}
    return {name: convert(np.load(os.path.join(folder, name + ".npy"))) if there else None
            for name, there in present.items()}


def load_torch_case(folder):
    """For the PyTorch peers: the case, its arrays as tensors and its dtype, torch's threads set."""
    import torch

    case = load_case(folder)
    torch.set_num_threads(case["threads"])
    arrays = load_inputs(folder, case, torch.from_numpy)
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[case["dtype"]]
    return case, arrays, dtype


def rotated_layers(case, weights, copy, max_sets=None):
    """The case's `layers` weight sets, rotated call by call as moe-bench rotates its own so that
    a cold cache is cold for the peer too: the first is `weights`, the others separate copies
    (the same values in memory of their own), at most `max_sets` of them (what fits a device).
    Returns a function giving the next set."""
    count = max(1, int(case.get("layers", 1)))
    if max_sets is not None:
        count = max(1, min(count, max_sets))
    sets = [weights] + [{k: None if v is None else copy(v) for k, v in weights.items()}
                        for _ in range(count - 1)]
    state = {"next": 0}

    def next_set():
        w = sets[state["next"] % count]
        state["next"] += 1
        return w

    return next_set


# Set by measure() when the peer is too slow for the case's time budget: why, with the measured
# time per call; write_result() passes it on and moe-bench reports the peer skipped.
_too_slow = {}


def too_slow(per_call_s, options):
    """The reason a peer taking `per_call_s` a call cannot give its samples within the case's
    budget (the minimum count in the maximum time), or None when it can."""
    reps, budget = options["reps"], options["max_time_s"]
    if per_call_s * reps <= budget:
        return None
    return ("takes {:.3g} s per call on this CPU; {} samples exceed the {:.3g} s budget"
            .format(per_call_s, reps, budget))


def measure(forward, options, timed=None):
    """Warm-up, calibration and sampling by moe-bench's protocol; returns (samples, inner).
    `timed(calls)` gives the seconds per call of `calls` calls (default: the host's clock).
    A peer too slow for the budget (judged from the first warm-up call, then from one timed
    call) takes no samples: it returns ([], 0) with the reason kept for write_result; its last
    output is still checked."""
    def host_timed(calls):
        start = time.perf_counter()
        for _ in range(calls):
            forward()
        return (time.perf_counter() - start) / calls

    timed = timed or host_timed
    first = time.perf_counter()
    forward()
    first = time.perf_counter() - first
    # The first call carries one-time costs: only one slower than the whole budget ends it here.
    if first > options["max_time_s"]:
        _too_slow["why"] = too_slow(first, options)
        return [], 0
    for _ in range(max(options["warmup"], 1) - 1):
        forward()
    one = max(timed(1), 1e-9)
    why = too_slow(one, options)
    if why is not None:
        _too_slow["why"] = why
        return [], 0
    inner = max(1, min(1 << 20, int(-(-options["min_sample_s"] // one))))
    samples = []
    begin = time.perf_counter()
    while True:
        elapsed = time.perf_counter() - begin
        if len(samples) >= options["reps"] and elapsed >= options["min_time_s"]:
            break
        if samples and elapsed >= options["max_time_s"]:
            break
        samples.append(timed(inner))
    return samples, inner


def measure_cuda(forward, options, torch):
    """measure() for a peer on a CUDA device: each sample is the device time between CUDA events
    recorded around `inner` calls (host synchronisation inside a call, as the Hugging Face loop
    has, shows up as device idle time between the events, as users see it)."""
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def device_timed(calls):
        torch.cuda.synchronize()
        start.record()
        for _ in range(calls):
            forward()
        stop.record()
        stop.synchronize()
        return start.elapsed_time(stop) * 1e-3 / calls

    return measure(forward, options, device_timed)


def loaded_blas():
    """The BLAS libraries this process actually loaded (from /proc/self/maps)."""
    libs = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split()[-1]
                name = os.path.basename(path)
                if path.startswith("/") and ("blas" in name or "mkl" in name or "dnnl" in name):
                    libs.add(path)
    except OSError:
        pass
    return ", ".join(sorted(libs)) or "unknown"


def write_result(folder, samples, inner, versions, setup_s=0.0):
    """samples.json: seconds per call, inner repetitions, versions, and the peer's own set-up
    time (weight prepacking) where it has one."""
    with open(os.path.join(folder, "samples.json.tmp"), "w") as f:
        json.dump({"samples_s": samples, "inner_reps": inner, "versions": versions,
                   "setup_s": setup_s, "too_slow": _too_slow.get("why")}, f)
    os.replace(os.path.join(folder, "samples.json.tmp"), os.path.join(folder, "samples.json"))


def finish(folder, samples, inner, y, selected, versions, setup_s=0.0):
    """Writes the last call's output y.npy (float32) and chosen experts selected.npy (int32), and
    samples.json; the versions gain the Python version and the interpreter."""
    import numpy as np

    np.save(os.path.join(folder, "y.npy"), np.asarray(y, dtype=np.float32))
    np.save(os.path.join(folder, "selected.npy"), np.asarray(selected, dtype=np.int32))
    write_result(folder, samples, inner, dict({"python": sys.version.split()[0],
                                               "interpreter": sys.executable}, **versions),
                 setup_s)


def fail(message):
    print("peer error: " + message, file=sys.stderr)
    sys.exit(3)
