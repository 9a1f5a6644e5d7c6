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
With quantized expert weights (the case's "weights": int8 or q4) the experts' matmuls run through
PyTorch's own CPU weight-only kernels on the stored codes and scales moe-bench writes: int8 per
output channel with torch.ops.aten._weight_int8pack_mm, q4 (groups of 32, one scale each) with
_weight_int4pack_mm_for_cpu on weights packed once by _convert_weight_to_int4pack_for_cpu (zero
points 0, codes offset by 8, as that kernel takes them).
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


MATRICES = ("w1", "w3", "w2", "ws1", "ws3", "ws2")


def quantized_weights(folder, fmt, dtype):
    """The expert matrices in the stored format, as PyTorch's weight-only kernels take them: for
    each matrix name the codes (int8 [G, N, K], or q4 packed per matrix) and, under NAME_s, the
    scales in the dtype (int8 [G, N]; q4 with zero points 0 [G, K/32, N, 2]); G is the expert
    count (1 for the shared experts)."""
    out = {}
    for name in MATRICES:
        path = os.path.join(folder, name + "_codes.npy")
        if not os.path.exists(path):
            out[name] = out[name + "_s"] = None
            continue
        codes = torch.from_numpy(np.load(path))
        scales = torch.from_numpy(np.load(os.path.join(folder, name + "_scales.npy")))
        if name.startswith("ws"):
            codes, scales = codes.unsqueeze(0), scales.unsqueeze(0)
        if fmt == "int8":
            out[name], out[name + "_s"] = codes.contiguous(), scales.to(dtype).contiguous()
            continue
        packed = [torch.ops.aten._convert_weight_to_int4pack_for_cpu(
            (c.to(torch.int32) + 8).contiguous(), 1) for c in codes]
        out[name] = torch.stack(packed)
        s = scales.transpose(1, 2).to(dtype)
        out[name + "_s"] = torch.stack([s, torch.zeros_like(s)], dim=-1).contiguous()
    return out


def quantized_mm(fmt, x, codes, scales):
    """x @ W.T for one quantized matrix (codes and scales of one expert)."""
    if fmt == "int8":
        return torch.ops.aten._weight_int8pack_mm(x, codes, scales)
    return torch.ops.aten._weight_int4pack_mm_for_cpu(x, codes, 32, scales)


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
    quant = case.get("weights", "same")
    quant = None if quant == "same" else quant
    if quant is not None and (device != "cpu" or grouped):
        peer_protocol.fail("quantized weights run on the CPU loop only")
    x = a["x"].to(device)
    # The values are representable in the dtype already: these conversions are exact.
    weights = {k: (v.to(device, dtype) if k in MATRICES else v.to(device))
               if v is not None else None
               for k, v in a.items() if k != "x"}
    if quant is not None:
        # The expert matrices come as codes and scales only (load_inputs gave None for them).
        weights.update(quantized_weights(folder, quant, dtype))
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

    def quantized_ffn(xe, L, names, g):
        """One expert's FFN (expert g of the matrices `names`) through the weight-only kernels."""
        def mm(v, name):
            return quantized_mm(quant, v, L[name][g], L[name + "_s"][g])
        up = mm(xe, names[1]) if L[names[1]] is not None else None
        return mm(activation(act, mm(xe, names[0]), up), names[2])

    def expert(xe, L, e):
        if quant is not None:
            return quantized_ffn(xe, L, ("w1", "w3", "w2"), e)
        return ffn(xe, L["w1"][e], L["w3"][e] if gated else None, L["w2"][e])

    def shared_expert(L):
        if quant is not None:
            return quantized_ffn(xd, L, ("ws1", "ws3", "ws2"), 0)
        return ffn(xd, L["ws1"], L["ws3"], L["ws2"])

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
            logits = x @ L["wg"].T + L["logit_bias"]
            sb = L["selection_bias"]
            idx, w = route(case, logits, sb)
            keep = capacity_mask(case, idx)
            wd = w.to(dtype)
            y = torch.zeros_like(xd)
            if grouped:
                experts_grouped(L, idx, keep, wd, y)
                if shared:
                    y += shared_expert(L)
                state["y"], state["idx"] = y, idx
                return
            hit = torch.nn.functional.one_hot(idx, case["experts"]).permute(2, 1, 0) & keep.T
            for e in range(case["experts"]):
                slot, tok = torch.where(hit[e])
                if tok.numel() == 0:
                    continue
                ye = expert(xd.index_select(0, tok), L, e)
                y.index_add_(0, tok, ye * wd[tok, slot, None])
            if shared:
                y += shared_expert(L)
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
        if quant is not None:
            versions["experts"] = ("torch.ops.aten._weight_int8pack_mm" if quant == "int8"
                                   else "torch.ops.aten._weight_int4pack_mm_for_cpu")
    peer_protocol.finish(folder, samples, inner, state["y"].float().cpu().numpy(),
                         state["idx"].cpu().numpy(), versions)


if __name__ == "__main__":
    main()
