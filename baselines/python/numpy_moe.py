#!/usr/bin/env python3
"""MoE layer in NumPy, written the way users write it: router matmul, softmax, top-k,
renormalise, then a loop over experts with gather, SwiGLU and scatter-add (as in the Hugging Face
Mixtral sparse block). Usage: numpy_moe.py FOLDER (the protocol is in peer_protocol.py)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_protocol  # noqa: E402

try:
    import numpy as np
except ImportError:
    peer_protocol.fail("numpy is not installed for " + sys.executable)


def softmax(z, axis=-1):
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def activation(kind, gate, up):
    if kind == "swiglu":
        return gate * sigmoid(gate) * up
    if kind == "swiglu_oai":
        gate = np.minimum(gate, 7.0)
        up = np.clip(up, -7.0, 7.0)
        return gate * sigmoid(1.702 * gate) * (up + 1.0)
    from math import erf  # GELU (exact, erf); vectorised below
    return 0.5 * gate * (1.0 + np.vectorize(erf)(gate / np.sqrt(2.0)).astype(gate.dtype))


def route(case, logits, selection_bias):
    r = case["router"]
    k = case["top_k"]
    if r["scoring"] == "softmax":
        scores = softmax(logits)
    elif r["scoring"] == "sigmoid":
        scores = sigmoid(logits)
    else:
        scores = logits
    select = scores + selection_bias if r["selection_bias"] else scores
    if r["groups"] > 0:
        t, e = select.shape
        per = e // r["groups"]
        grouped = select.reshape(t, r["groups"], per)
        top2 = -np.sort(-grouped, axis=-1)[:, :, :2].sum(-1)
        best = np.argsort(-top2, axis=-1, kind="stable")[:, : r["topk_groups"]]
        mask = np.zeros((t, r["groups"]), dtype=bool)
        np.put_along_axis(mask, best, True, axis=-1)
        select = np.where(np.repeat(mask, per, axis=1), select, -np.inf)
    # Stable sort on the negated scores: ties go to the lower expert index.
    idx = np.argsort(-select, axis=-1, kind="stable")[:, :k]
    if r["scoring"] == "topk_softmax":
        w = softmax(np.take_along_axis(scores, idx, -1))
    else:
        w = np.take_along_axis(scores, idx, -1)
        if r["renormalize"]:
            w = w / w.sum(-1, keepdims=True)
    return idx, (w * r["scale"]).astype(np.float32)


def capacity_mask(case, idx):
    c = case["capacity_factor"]
    keep = np.ones(idx.shape, dtype=bool)
    if c <= 0:
        return keep
    cap = int(np.ceil(c * case["tokens"] * case["top_k"] / case["experts"]))
    used = np.zeros(case["experts"], dtype=np.int64)
    for t in range(idx.shape[0]):
        for j in range(idx.shape[1]):
            e = idx[t, j]
            keep[t, j] = used[e] < cap
            used[e] += keep[t, j]
    return keep


def main():
    folder = sys.argv[1]
    case = peer_protocol.load_case(folder)
    a = peer_protocol.load_inputs(folder, case)
    x = a["x"]
    next_layer = peer_protocol.rotated_layers(
        case, {k: v for k, v in a.items() if k != "x"}, np.copy)
    gated = a["w3"] is not None
    shared = a["ws1"] is not None
    act = case["activation"]
    state = {}

    def ffn(xe, a, b, c):
        up = xe @ b.T if b is not None else None
        return activation(act, xe @ a.T, up) @ c.T

    def forward():
        L = next_layer()
        wg, lb, sb = L["wg"], L["logit_bias"], L["selection_bias"]
        w1, w3, w2 = L["w1"], L["w3"], L["w2"]
        logits = x @ wg.T + lb
        idx, w = route(case, logits, sb)
        keep = capacity_mask(case, idx)
        y = np.zeros_like(x)
        for e in range(case["experts"]):
            tok, slot = np.nonzero((idx == e) & keep)
            if tok.size == 0:
                continue
            ye = ffn(x[tok], w1[e], w3[e] if gated else None, w2[e])
            np.add.at(y, tok, ye * w[tok, slot][:, None])
        if shared:
            y += ffn(x, L["ws1"], L["ws3"], L["ws2"])
        state["y"], state["idx"] = y, idx

    samples, inner = peer_protocol.measure(forward, case["timing"])
    peer_protocol.finish(folder, samples, inner, state["y"], state["idx"],
                         {"numpy": np.__version__, "blas": peer_protocol.loaded_blas()})


if __name__ == "__main__":
    main()
