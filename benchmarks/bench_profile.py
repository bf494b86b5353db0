"""Profiling overhead: superexperts.profile vs a plain forward vs a naive per-expert capture.

    python benchmarks/bench_profile.py [--layers 8 --experts 64 --hidden 512 --tokens 256 --batch 4]

One synthetic Qwen3-MoE (random weights), one batch of random tokens, fp32 on the device you pick.
Prints the median of --repeats runs for each way and the ratios (no timing is asserted anywhere).
- plain:   model(input_ids) with transformers' default experts implementation (grouped_mm)
- profile: superexperts.profile(model, input_ids) (per-expert maxima in the same pass + hidden-state stats)
- naive:   a per-expert eager loop that measures each expert's down_proj output as it goes and syncs per
           expert (`.item()`), as the reference script does with per-expert module hooks
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM
from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS, ExpertsInterface

import superexperts
from superexperts.runfolder import library_versions

NAIVE_MAXIMA: dict[tuple[int, int], float] = {}


def naive_capture_forward(self, hidden_states, top_k_index, top_k_weights):
    """transformers' eager experts loop plus a host-synchronising max per expert."""
    final = torch.zeros_like(hidden_states)
    for e in range(self.num_experts):
        token_idx, k_pos = torch.where(top_k_index == e)
        if token_idx.numel() == 0:
            continue
        gate, up = torch.nn.functional.linear(hidden_states[token_idx], self.gate_up_proj[e]).chunk(2, dim=-1)
        out = torch.nn.functional.linear(self.act_fn(gate) * up, self.down_proj[e])
        key = (id(self), e)
        NAIVE_MAXIMA[key] = max(NAIVE_MAXIMA.get(key, 0.0), out.abs().max().item())
        final.index_add_(0, token_idx, out * top_k_weights[token_idx, k_pos, None])
    return final


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--experts", type=int, default=64)
    p.add_argument("--top-k", type=int, default=8)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--moe-intermediate", type=int, default=256)
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()

    config = Qwen3MoeConfig(vocab_size=1024, hidden_size=args.hidden, intermediate_size=4 * args.hidden,
                            moe_intermediate_size=args.moe_intermediate, num_hidden_layers=args.layers,
                            num_attention_heads=8, num_key_value_heads=4, head_dim=args.hidden // 8,
                            num_experts=args.experts, num_experts_per_tok=args.top_k)  # fmt: skip
    torch.manual_seed(0)
    model = Qwen3MoeForCausalLM(config).to(args.device).eval()
    ids = torch.randint(0, 1024, (args.batch, args.tokens), device=args.device)
    ExpertsInterface.register("bench_naive_capture", naive_capture_forward)

    def plain():
        with torch.inference_mode():
            model(input_ids=ids, use_cache=False)

    def naive():
        model.set_experts_implementation("bench_naive_capture")
        try:
            plain()
        finally:
            model.set_experts_implementation("grouped_mm")

    def profiled():
        superexperts.profile(model, ids, batch_size=args.batch)

    t_plain = median_seconds(plain, args.repeats)
    t_profile = median_seconds(profiled, args.repeats)
    t_naive = median_seconds(naive, args.repeats)
    result = {
        "setup": vars(args) | {"default_experts_implementation": model.config._experts_implementation},
        "seconds": {"plain": t_plain, "profile": t_profile, "naive": t_naive},
        "profile_over_plain": t_profile / t_plain,
        "naive_over_plain": t_naive / t_plain,
        "profile_over_naive": t_profile / t_naive,
        "versions": library_versions(),
    }
    print(json.dumps(result, indent=2))
    assert "bench_naive_capture" in ALL_EXPERTS_FUNCTIONS


if __name__ == "__main__":
    main()
