#!/usr/bin/env python3
"""MoE layer through Intel Extension for PyTorch's fused MoE, the kernel vLLM's CPU backend runs:
ipex.llm.modules.GatedMLPMOE over the gate/up weights fused as W13 [E, 2f, d] and the down weights
W2 [E, d, f], prepacked once (the time it takes is reported as setup), routing (softmax, top-k,
optional renormalisation) fused into the call. The router logits come from a torch matmul in
FP32, as in vLLM. The experts the kernel chose are not returned by it: they are recomputed here
with torch.topk on the same scores, for the tool's selection check. moe-bench only sends cases
the module supports (python_peer.cpp says why the others are skipped). Usage: ipex_moe.py FOLDER."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_protocol  # noqa: E402

try:
    import numpy as np
    import torch
    import intel_extension_for_pytorch as ipex
except ImportError as e:
    peer_protocol.fail("{} is not installed for {}".format(e.name, sys.executable))


def main():
    folder = sys.argv[1]
    case, a, dtype = peer_protocol.load_torch_case(folder)
    renormalize = case["router"]["renormalize"]
    k = case["top_k"]
    x = a["x"]
    xd = x.to(dtype)

    prepack = {"on": True, "note": "prepacked"}

    def build(w1, w3, w2):
        # The values are representable in the dtype already: these conversions are exact.
        w13 = torch.cat([w1, w3], dim=1).to(dtype).contiguous()
        return ipex.llm.modules.GatedMLPMOE(w13, w2.to(dtype).contiguous(),
                                            use_prepack=prepack["on"])

    setup = time.perf_counter()
    first = build(a["w1"], a["w3"], a["w2"])
    with torch.inference_mode():
        try:
            first(xd, False, k, x @ a["wg"].T + a["logit_bias"], renormalize)  # prepacks
        except Exception as e:  # IPEX 2.8 cannot prepack some bf16 shapes (d = 32 or 48, f = 64)
            prepack.update(on=False, note="unpacked: prepacking failed ({})".format(e))
            first = build(a["w1"], a["w3"], a["w2"])
            first(xd, False, k, x @ a["wg"].T + a["logit_bias"], renormalize)
    setup = time.perf_counter() - setup
    router = {"wg": a["wg"], "logit_bias": a["logit_bias"], "module": first}
    next_layer = peer_protocol.rotated_layers(
        case, router, lambda v: build(a["w1"], a["w3"], a["w2"]) if v is first else v.clone())
    state = {}

    def forward():
        with torch.inference_mode():
            L = next_layer()
            logits = x @ L["wg"].T + L["logit_bias"]
            state["y"] = L["module"](xd, False, k, logits, renormalize)
            state["logits"] = logits

    with torch.inference_mode():
        for _ in range(int(case.get("layers", 1))):
            forward()  # prepacks every copy before timing
    samples, inner = peer_protocol.measure(forward, case["timing"])
    scores = torch.softmax(state["logits"], dim=-1)
    idx = torch.sort(-scores, dim=-1, stable=True).indices[:, :k]
    peer_protocol.finish(folder, samples, inner, state["y"].float().numpy(), idx.numpy(),
                         {"torch": torch.__version__, "ipex": ipex.__version__,
                          "weights": prepack["note"], "threads": torch.get_num_threads()},
                         setup_s=setup)


if __name__ == "__main__":
    main()
