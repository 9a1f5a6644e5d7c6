#!/usr/bin/env python3
"""MoE layer in PyTorch, as the Hugging Face Mixtral sparse block writes it: router linear,
softmax, top-k, renormalise, then a loop over experts with index_select, SwiGLU and index_add_.
Inference mode, torch.set_num_threads(threads). In bf16 and f16 it runs the way users run that
block: the experts' matmuls, the activation, the routing weight and the index_add_ combine all in
the dtype; only the router (logits and softmax) in FP32. That rounds more often than the tool's
semantics (FP32 accumulation, hidden values and outputs rounded once): moe-bench holds it to a
tolerance widened by those extra roundings (Kernel::extra_roundings).

On a GPU (--device cuda) the same loop runs on the device, timed with CUDA events; with
--grouped-mm the experts run as three torch._grouped_mm calls over the tokens sorted by expert
(gate, up, down), the way recent PyTorch MoE code does, with the same activation, weighting and
index_add_ combine in the dtype. Off a GPU (--device cpu, for tests of the sorting and offsets)
torch._grouped_mm, which PyTorch has on CUDA only, is replaced by a loop of per-expert matmuls.
Usage: torch_moe.py FOLDER [--device cpu|cuda] [--grouped-mm]."""
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


def grouped_mm(a, b, offs):
    """a[n, K] rows sorted by group, b[G, K, N], offs[G] cumulative row ends (int32): a @ b[g]
    for the rows of each group g."""
    if a.is_cuda:
        return torch._grouped_mm(a, b, offs=offs)
    out = torch.empty(a.shape[0], b.shape[2], dtype=a.dtype)
    begin = 0
    for g, end in enumerate(offs.tolist()):
        out[begin:end] = a[begin:end] @ b[g]
        begin = end
    return out


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
        mask = torch.zeros(t, r["groups"], dtype=torch.bool, device=select.device)
        mask.scatter_(1, best, True)
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
    c = case["capacity_factor"]
    if c <= 0:
        return torch.ones_like(idx, dtype=torch.bool)
    cap = int(-(-c * case["tokens"] * case["top_k"] // case["experts"]))
    used = [0] * case["experts"]
    keep = []
    for e in idx.flatten().tolist():
        keep.append(used[e] < cap)
        used[e] += 1 if used[e] < cap else 0
    return torch.tensor(keep, dtype=torch.bool, device=idx.device).view(idx.shape)


def main():
    folder = sys.argv[1]
    device = sys.argv[sys.argv.index("--device") + 1] if "--device" in sys.argv else "cpu"
    grouped = "--grouped-mm" in sys.argv
    case, a, dtype = peer_protocol.load_torch_case(folder)
    if device == "cuda" and not torch.cuda.is_available():
        peer_protocol.fail("torch {} sees no CUDA device".format(torch.__version__))
    x = a["x"].to(device)
    # The values are representable in the dtype already: these conversions are exact.
    weights = {k: (v.to(device, dtype) if k in ("w1", "w3", "w2", "ws1", "ws3", "ws2")
                   else v.to(device)) if v is not None else None
               for k, v in a.items() if k != "x"}
    if grouped:
        # torch._grouped_mm takes the second operand K-major: the transposed views of the
        # [E, out, in] weights, no copy.
        for k in ("w1", "w3", "w2"):
            if weights[k] is not None:
                weights[k] = weights[k].transpose(1, 2)
    max_sets = None
    if device == "cuda":
        layer_bytes = sum(v.numel() * v.element_size() for v in weights.values() if v is not None)
        max_sets = max(1, int(torch.cuda.mem_get_info()[0] * 0.4 // max(layer_bytes, 1)))
    next_layer = peer_protocol.rotated_layers(case, weights, torch.clone, max_sets)
    xd = x.to(dtype)
    gated = weights["w3"] is not None
    shared = weights["ws1"] is not None
    act = case["activation"]
    state = {}

    def ffn(xe, a, b, c):
        up = xe @ b.T if b is not None else None
        return activation(act, xe @ a.T, up) @ c.T

    def experts_grouped(L, idx, keep, wd, y):
        T, k, E = case["tokens"], case["top_k"], case["experts"]
        flat = idx.flatten()
        if case["capacity_factor"] > 0:
            # Dropped assignments sort last, past the final offset.
            flat = torch.where(keep.flatten(), flat, torch.full_like(flat, E))
            rows = int(keep.sum())
        else:
            rows = T * k
        order = torch.sort(flat, stable=True).indices[:rows]
        offs = torch.cumsum(torch.bincount(flat, minlength=E + 1)[:E], 0).to(torch.int32)
        tok = order // k
        xs = xd.index_select(0, tok)
        gate = grouped_mm(xs, L["w1"], offs)
        up = grouped_mm(xs, L["w3"], offs) if gated else None
        ys = grouped_mm(activation(act, gate, up), L["w2"], offs)
        y.index_add_(0, tok, ys * wd.flatten()[order, None])

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
            if grouped:
                experts_grouped(L, idx, keep, wd, y)
                if shared:
                    y += ffn(xd, L["ws1"], L["ws3"], L["ws2"])
                state["y"], state["idx"] = y, idx
                return
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

    if device == "cuda":
        samples, inner = peer_protocol.measure_cuda(forward, case["timing"], torch)
        versions = {"torch": torch.__version__, "device": torch.cuda.get_device_name(),
                    "cuda": torch.version.cuda,
                    "experts": "torch._grouped_mm" if grouped else "loop over experts"}
    else:
        samples, inner = peer_protocol.measure(forward, case["timing"])
        versions = {"torch": torch.__version__, "blas": peer_protocol.loaded_blas(),
                    "threads": torch.get_num_threads()}
    peer_protocol.finish(folder, samples, inner, state["y"].float().cpu().numpy(),
                         state["idx"].cpu().numpy(), versions)


if __name__ == "__main__":
    main()
