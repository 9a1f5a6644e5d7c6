#!/usr/bin/env python3
"""MoE layer through the model family's own Hugging Face transformers block, the code people run:
MixtralSparseMoeBlock (Mixtral, and any softmax top-k renormalised SwiGLU shape), Qwen3MoeSparse
MoeBlock, OlmoeSparseMoeBlock (softmax top-k without renormalisation), DeepseekV3MoE (sigmoid with
selection bias, grouped top-k, routed scaling, shared experts) and GptOssMLP (top-k of biased
logits, softmax over the k, clamped SwiGLU with interleaved gate/up and biases), each built from a
config of the case's sizes and loaded with the case's weights. The router is replaced by an FP32
linear with the case's logit bias (the tool's routing skew; the blocks' own routers have no bias
but GPT-OSS's), so that expert selection stays checkable against the oracle; everything after
the logits is the block's code, in the case's dtype. moe-bench only sends cases a family's block
computes (python_peer.cpp says why the others are skipped). Usage: hf_moe.py FOLDER."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_protocol  # noqa: E402

try:
    import numpy as np
    import torch
    import transformers
except ImportError as e:
    peer_protocol.fail("{} is not installed for {}".format(e.name, sys.executable))


class Fp32Router(torch.nn.Module):
    """x W^T + b in FP32, returned in FP32: the routers of Mixtral, Qwen3 and OLMoE blocks."""

    def __init__(self, weight, bias):
        super().__init__()
        self.weight, self.bias = weight, bias

    def forward(self, x):
        return torch.nn.functional.linear(x.float(), self.weight, self.bias)


def set_experts(experts, a, names):
    """Per-expert gate/up/down Linear weights ([f, d], [f, d], [d, f]) from the case's arrays."""
    gate, up, down = names
    for e, expert in enumerate(experts):
        getattr(expert, gate).weight.data = a["w1"][e].clone()
        getattr(expert, up).weight.data = a["w3"][e].clone()
        getattr(expert, down).weight.data = a["w2"][e].clone()


def build(case, a, dtype):
    """The family's block with the case's weights, and how to call it: returns (block, run) where
    run(block, x) gives (y, selected experts)."""
    family = case["family"]
    E, k, d, f = case["experts"], case["top_k"], case["d_model"], case["d_ff"]
    wg, lb = a["wg"], a["logit_bias"]
    if family in ("mixtral", "qwen3", "olmoe"):
        if family == "mixtral":
            from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock as B
            config = transformers.MixtralConfig(hidden_size=d, intermediate_size=f,
                                                num_local_experts=E, num_experts_per_tok=k)
            names = ("w1", "w3", "w2")
        elif family == "qwen3":
            from transformers.models.qwen3_moe.modeling_qwen3_moe import (
                Qwen3MoeSparseMoeBlock as B)
            config = transformers.Qwen3MoeConfig(hidden_size=d, moe_intermediate_size=f,
                                                 num_experts=E, num_experts_per_tok=k,
                                                 norm_topk_prob=case["router"]["renormalize"])
            names = ("gate_proj", "up_proj", "down_proj")
        else:
            from transformers.models.olmoe.modeling_olmoe import OlmoeSparseMoeBlock as B
            config = transformers.OlmoeConfig(hidden_size=d, intermediate_size=f, num_experts=E,
                                              num_experts_per_tok=k,
                                              norm_topk_prob=case["router"]["renormalize"])
            names = ("gate_proj", "up_proj", "down_proj")
        block = B(config)
        set_experts(block.experts, a, names)
        block = block.to(dtype)
        block.gate = Fp32Router(wg, lb)

        def run(blk, x):
            y, logits = blk(x[None])
            scores = torch.softmax(logits, dim=-1)
            return y[0], torch.sort(-scores, dim=-1, stable=True).indices[:, :k]

        return block, run
    if family == "deepseek-v3":
        from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3MoE
        r = case["router"]
        shared = case["shared_width"]
        config = transformers.DeepseekV3Config(
            hidden_size=d, moe_intermediate_size=f, n_routed_experts=E, num_experts_per_tok=k,
            n_group=r["groups"], topk_group=r["topk_groups"], norm_topk_prob=r["renormalize"],
            routed_scaling_factor=r["scale"], n_shared_experts=max(1, shared // f))
        block = DeepseekV3MoE(config)
        set_experts(block.experts, a, ("gate_proj", "up_proj", "down_proj"))
        block.shared_experts.gate_proj.weight.data = a["ws1"].clone()
        block.shared_experts.up_proj.weight.data = a["ws3"].clone()
        block.shared_experts.down_proj.weight.data = a["ws2"].clone()
        block = block.to(dtype)
        # The router's own code (FP32 sigmoid, bias, groups); its logits gain the case's skew.
        block.gate.weight.data = wg.clone()
        block.gate.e_score_correction_bias = a["selection_bias"].clone()

        def run(blk, x):
            plain = blk.gate.weight.data
            y = blk(x[None])[0]
            scores = torch.sigmoid(x.float() @ plain.T) + blk.gate.e_score_correction_bias
            idx = blk.gate.get_topk_indices(torch.sigmoid(x.float() @ plain.T))
            order = torch.sort(-scores.gather(1, idx), dim=-1, stable=True).indices
            return y, idx.gather(1, order)

        return block, run
    if family == "gpt-oss":
        from transformers.models.gpt_oss.modeling_gpt_oss import GptOssMLP
        config = transformers.GptOssConfig(hidden_size=d, intermediate_size=f,
                                           num_local_experts=E, num_experts_per_tok=k)
        block = GptOssMLP(config)
        gate_up = torch.empty(E, d, 2 * f)
        gate_up[..., 0::2] = a["w1"].transpose(1, 2)  # gate at even columns, up at odd
        gate_up[..., 1::2] = a["w3"].transpose(1, 2)
        block.experts.gate_up_proj.data = gate_up
        block.experts.gate_up_proj_bias.data = torch.zeros(E, 2 * f)
        block.experts.down_proj.data = a["w2"].transpose(1, 2).contiguous()
        block.experts.down_proj_bias.data = torch.zeros(E, d)
        block.router.weight.data = wg.clone()
        block.router.bias.data = lb.clone()
        block = block.to(dtype)
        # The router's own code in FP32 on FP32 inputs (selection stays checkable).
        router = block.router.float()
        plain_forward = router.forward
        router.forward = lambda h: plain_forward(h.float())

        def run(blk, x):
            y, _ = blk(x[None])
            logits = x.float() @ blk.router.weight.T + blk.router.bias
            return y[0], torch.sort(-logits, dim=-1, stable=True).indices[:, :k]

        return block, run
    peer_protocol.fail("no Hugging Face block for family '{}'".format(family))


def main():
    folder = sys.argv[1]
    case, a, dtype = peer_protocol.load_torch_case(folder)
    block, run = build(case, a, dtype)
    block.eval()
    xd = a["x"].to(dtype)
    import copy
    next_layer = peer_protocol.rotated_layers(case, {"block": block}, copy.deepcopy)
    state = {}

    def forward():
        with torch.inference_mode():
            state["y"], state["idx"] = run(next_layer()["block"], xd)

    samples, inner = peer_protocol.measure(forward, case["timing"])
    peer_protocol.finish(folder, samples, inner, state["y"].float().numpy(), state["idx"].numpy(),
                         {"transformers": transformers.__version__, "torch": torch.__version__,
                          "block": type(block).__name__, "threads": torch.get_num_threads()})


if __name__ == "__main__":
    main()
