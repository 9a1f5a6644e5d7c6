#!/usr/bin/env python3
"""MoE layer in PyTorch, as the Hugging Face Mixtral sparse block writes it: router linear,
softmax, top-k, renormalise, then a loop over experts with index_select, SwiGLU and index_add_.
Inference mode, torch.set_num_threads(threads). In bf16 and f16 it runs the way users run that
block: the experts' matmuls, the activation, the routing weight and the index_add_ combine all in
the dtype; only the router (logits and softmax) in FP32. That rounds more often than the tool's
semantics (FP32 accumulation, hidden values and outputs rounded once): moe-bench holds it to a
tolerance widened by those extra roundings (Kernel::extra_roundings). Usage: torch_moe.py FOLDER."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_protocol  # noqa: E402

try:
    import numpy as np
    import torch
except ImportError as e:
    peer_protocol.fail("{} is not installed for {}".format(e.name, sys.executable))


def activation(kind, gate, up):
    if kind == "swiglu":
        return torch.nn.functional.silu(gate) * up
    if kind == "swiglu_oai":
        gate = gate.clamp(max=7.0)
        up = up.clamp(-7.0, 7.0)
        return gate * torch.sigmoid(1.702 * gate) * (up + 1.0)
    return torch.nn.functional.gelu(gate)


def route(case, logits, selection_bias):
    r = case["router"]
    k = case["top_k"]
    if r["scoring"] == "softmax":
        scores = torch.softmax(logits, dim=-1)
    elif r["scoring"] == "sigmoid":
        scores = torch.sigmoid(logits)
    else:
        scores = logits
    select = scores + selection_bias if r["selection_bias"] else scores
    if r["groups"] > 0:
        t, e = select.shape
        per = e // r["groups"]
        top2 = select.view(t, r["groups"], per).topk(min(2, per), dim=-1).values.sum(-1)
        # Stable ordering: ties go to the lower group (torch.topk does not promise it).
        best = torch.sort(-top2, dim=-1, stable=True).indices[:, : r["topk_groups"]]
        mask = torch.zeros(t, r["groups"], dtype=torch.bool).scatter_(1, best, True)
        select = select.masked_fill(~mask.repeat_interleave(per, dim=1), float("-inf"))
    idx = torch.sort(-select, dim=-1, stable=True).indices[:, :k]
    if r["scoring"] == "topk_softmax":
        w = torch.softmax(scores.gather(1, idx), dim=-1)
    else:
        w = scores.gather(1, idx)
        if r["renormalize"]:
            w = w / w.sum(-1, keepdim=True)
    return idx, w * r["scale"]


def capacity_mask(case, idx):
    keep = torch.ones_like(idx, dtype=torch.bool)
    c = case["capacity_factor"]
    if c <= 0:
        return keep
    cap = int(-(-c * case["tokens"] * case["top_k"] // case["experts"]))
    used = [0] * case["experts"]
    flat = idx.flatten().tolist()
    for i, e in enumerate(flat):
        keep.view(-1)[i] = used[e] < cap
        used[e] += 1 if used[e] < cap else 0
    return keep


def main():
    folder = sys.argv[1]
    case, a, dtype = peer_protocol.load_torch_case(folder)
    x = a["x"]
    # The values are representable in the dtype already: these conversions are exact.
    weights = {k: (v.to(dtype) if k in ("w1", "w3", "w2", "ws1", "ws3", "ws2") else v)
               if v is not None else None for k, v in a.items() if k != "x"}
    next_layer = peer_protocol.rotated_layers(case, weights, torch.clone)
    xd = x.to(dtype)
    gated = weights["w3"] is not None
    shared = weights["ws1"] is not None
    act = case["activation"]
    state = {}

    def ffn(xe, a, b, c):
        up = xe @ b.T if b is not None else None
        return activation(act, xe @ a.T, up) @ c.T

    def forward():
        with torch.inference_mode():
            L = next_layer()
            w1, w3, w2 = L["w1"], L["w3"], L["w2"]
            logits = x @ L["wg"].T + L["logit_bias"]
            sb = L["selection_bias"]
            idx, w = route(case, logits, sb)
            keep = capacity_mask(case, idx)
            wd = w.to(dtype)
            y = torch.zeros_like(xd)
            hit = torch.nn.functional.one_hot(idx, case["experts"]).permute(2, 1, 0) & keep.T
            for e in range(case["experts"]):
                slot, tok = torch.where(hit[e])
                if tok.numel() == 0:
                    continue
                ye = ffn(xd.index_select(0, tok), w1[e], w3[e] if gated else None, w2[e])
                y.index_add_(0, tok, ye * wd[tok, slot, None])
            if shared:
                y += ffn(xd, L["ws1"], L["ws3"], L["ws2"])
            state["y"], state["idx"] = y, idx

    samples, inner = peer_protocol.measure(forward, case["timing"])
    peer_protocol.finish(folder, samples, inner, state["y"].float().numpy(), state["idx"].numpy(),
                         {"torch": torch.__version__, "blas": peer_protocol.loaded_blas(),
                          "threads": torch.get_num_threads()})


if __name__ == "__main__":
    main()
