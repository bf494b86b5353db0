"""Planted tiny Qwen3-MoE models for the causal check: a chain of Super Experts writing one
massive-activation channel at the first token, and an independent outlier expert.

Weights are seeded random (std 0.02, so ordinary experts write small values) except for planted
entries, the way `models/demo.py` builds the demo. Attention outputs are zeroed so each token's
hidden state depends only on its own embedding and the experts it is routed to.

- token 0 of every window is BOS (`BOS`), whose embedding is channel `BOS_CHANNEL` alone; every
  other token carries the constant channel `QUERY` that switches planted units and routes off;
- chain experts write into `MA_CHANNEL` at BOS. In a multiplicative chain the later SEs read
  `MA_CHANNEL` (they fire only when the earlier SE wrote it: amplification); in an additive chain
  they also read `BOS_CHANNEL` (they fire with or without the earlier SE);
- the outlier reads `TRIGGER_CHANNEL` (set in the embedding of token `TRIGGER`) and writes a far
  larger value into `OUTLIER_CHANNEL`: independent of the chain.
"""

from __future__ import annotations

import torch
from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

VOCAB, HIDDEN, LAYERS = 64, 32, 6
BOS, TRIGGER = 1, 7
BOS_CHANNEL, QUERY, TRIGGER_CHANNEL, MA_CHANNEL, OUTLIER_CHANNEL = 1, 2, 4, 9, 20


def config(layers: int = LAYERS) -> Qwen3MoeConfig:
    return Qwen3MoeConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=48,
        moe_intermediate_size=16,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        num_experts=8,
        num_experts_per_tok=2,
        norm_topk_prob=True,
        max_position_embeddings=256,
        tie_word_embeddings=False,
    )


@torch.no_grad()
def plant_expert(
    model, layer: int, expert: int, reads: dict[int, float], write: int, gain: float, *, query: int = QUERY
) -> None:
    """Route the tokens whose normalized hidden state has `reads` channels to `expert` and make its
    intermediate unit 0 write `gain` x (its activation) into channel `write` (a super weight).
    Channel `query` (constant in ordinary tokens) inhibits both, so ordinary tokens are neither
    routed there nor switch the unit on."""
    block = model.model.layers[layer].mlp
    router, experts = block.gate.weight, block.experts
    inter = experts.down_proj.shape[-1]
    for channel, weight in reads.items():
        router[expert, channel] = 3.0 * weight
        experts.gate_up_proj[expert, 0, channel] = weight  # gate row 0
        experts.gate_up_proj[expert, inter, channel] = weight  # up row 0
    router[expert, query] = -6.0
    experts.gate_up_proj[expert, 0, query] = -2.0
    experts.down_proj[expert, write, 0] = gain


def build(
    chain: list[tuple[int, int, float]],
    *,
    multiplicative: bool,
    outlier: tuple[int, int, float] | None,
    seed: int = 0,
) -> Qwen3MoeForCausalLM:
    """`chain`: (layer, expert, gain) of each SE, first to last; `outlier`: (layer, expert, gain)."""
    torch.manual_seed(seed)
    model = Qwen3MoeForCausalLM(config()).eval()
    with torch.no_grad():
        emb = model.model.embed_tokens.weight
        emb[:, QUERY] += 1.0
        emb[BOS] = 0.0
        emb[BOS, BOS_CHANNEL] = 1.0
        emb[TRIGGER] = 0.0
        emb[TRIGGER, TRIGGER_CHANNEL] = 1.0
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
    for i, (layer, expert, gain) in enumerate(chain):
        if i == 0:
            reads = {BOS_CHANNEL: 1.0}
        else:
            reads = {MA_CHANNEL: 1.0} if multiplicative else {MA_CHANNEL: 1.0, BOS_CHANNEL: 1.0}
        plant_expert(model, layer, expert, reads, MA_CHANNEL, gain)
    if outlier is not None:
        plant_expert(model, outlier[0], outlier[1], {TRIGGER_CHANNEL: 1.0}, OUTLIER_CHANNEL, outlier[2])
    return model


def windows(samples: int = 2, seq_len: int = 12, seed: int = 0) -> torch.Tensor:
    """BOS-first windows of ordinary tokens; only the first holds the outlier's trigger token (so a
    statistic that kept one batch only would miss either the trigger or the later windows)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(8, VOCAB, (samples, seq_len), generator=g)
    ids[:, 0] = BOS
    ids[0, seq_len // 2] = TRIGGER
    return ids
