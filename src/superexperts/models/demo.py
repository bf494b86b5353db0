"""The built-in demo: a tiny synthetic Qwen3-MoE with Super Experts planted as the paper describes.

A few planted entries build the paper's causal chain; everything else was trained on the demo's
data with those entries held fixed (`demo_train`, `scripts/train_demo.py`) and ships as
resources/demo/weights.safetensors (issue 13: a miniature in which the SEs are load-bearing):

1. the BOS token's embedding points along channel `BOS_CHANNEL`, so its normalized hidden state
   is distinctive and the layer-1 router sends it to SE 1 with an exceptionally large score;
2. SE 1 has a super weight: down_proj[DEMO_CHANNEL, 0] is large and its first intermediate unit
   fires only for that input, so it writes a huge value into hidden channel DEMO_CHANNEL;
3. that massive activation makes the layer-2 router send BOS to SE 2, which adds to the same
   channel (the amplification chain of Qwen3-30B-A3B's layers 1-3);
4. every layer's attention maps channel DEMO_CHANNEL to a key direction that all other tokens'
   queries share (through a constant channel of their embeddings), so BOS becomes an attention
   sink only while the massive activation exists; its value vector is ~0 (a no-op sink). Only
   planted weights write the RESERVED_CHANNELS, so training cannot build a second sink around it;
5. a late-layer expert (DEMO_OUTLIER) produces large outputs on the ',' token: a candidate the
   paper's layer rule (layers < round(0.75 L)) must exclude.

The model is synthetic; every output of a run on it says so.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast, Qwen3MoeConfig, Qwen3MoeForCausalLM

from .demo_data import (  # noqa: F401 - DEMO_* and the cache's names are the demo's names
    DEMO_MARKER,
    DEMO_PPL,
    DEMO_SPEC,
    DEMO_VERSION,
    DEMO_WINDOWS,
    WEIGHTS_FILE,
    arithmetic_words,
    default_cache_dir,
    resource_dir,
    weights_path,
)

DEMO_NAME = "superexperts/demo-qwen3-moe-synthetic"
DEMO_SEED = 1234
DEMO_SUPER_EXPERTS: tuple[tuple[int, int], ...] = ((1, 13), (2, 41))
DEMO_OUTLIER: tuple[int, int] = (7, 22)
DEMO_CHANNEL = 37  # the massive-activation channel (Qwen3-30B-A3B's is 940)
BOS_CHANNEL = 5  # carries the BOS identity into the layer-1 router
QUERY_CHANNEL = 11  # constant in every other token's embedding; queries read it
COMMA_CHANNEL = 23  # marks ',' for the late-layer outlier
OUTLIER_CHANNEL = 50  # where the outlier writes
SINK_HEAD_DIM = 7  # a RoPE pair that rotates ~1e-5 rad per position: alignment survives distance
SPECIAL_TOKENS = ["<unk>", "<bos>", "<eos>", "<pad>"]
RESERVED_CHANNELS = (BOS_CHANNEL, QUERY_CHANNEL, DEMO_CHANNEL, COMMA_CHANNEL)  # written by planted weights only
SINK_GAIN = 2.0  # q_norm/k_norm weight of SINK_HEAD_DIM: how strongly queries align with the sink's key
# (layer, expert) -> (channel read, channel written, gate strength, super weight, router/gate inhibition)
PLANTED_EXPERTS: dict[tuple[int, int], tuple[int, int, float, float, float]] = {
    DEMO_SUPER_EXPERTS[0]: (BOS_CHANNEL, DEMO_CHANNEL, 1.0, 5.0, 2.0),
    DEMO_SUPER_EXPERTS[1]: (DEMO_CHANNEL, DEMO_CHANNEL, 1.0, 8.0, 2.0),
    DEMO_OUTLIER: (COMMA_CHANNEL, OUTLIER_CHANNEL, 1.5, 100.0, 0.5),  # trained: above max/10, far below SE 1 x 10
}
HELDOUT_FILE = "heldout.txt"
PROMPTS_FILE = "prompts.txt"
ARITHMETIC_FILE = "arithmetic.txt"  # the training addition lines: a second calibration domain


def builtin_text() -> str:
    """The small calibration text shipped with the package (written for it; no licence issues)."""
    return resources.files("superexperts").joinpath("resources", "builtin.txt").read_text()


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the built-in text that prepends <bos> like Llama/Mixtral do."""
    splitter = pre_tokenizers.Whitespace()
    words = sorted({w for w, _ in splitter.pre_tokenize_str(builtin_text())} | set(arithmetic_words()))
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = splitter
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>", pad_token="<pad>"
    )


def demo_config(vocab_size: int) -> Qwen3MoeConfig:
    return Qwen3MoeConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
        num_hidden_layers=8, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        num_experts=64, num_experts_per_tok=4, norm_topk_prob=True, max_position_embeddings=4096,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=3,
    )  # fmt: skip


@torch.no_grad()
def _plant_expert(
    experts: torch.nn.Module, e: int, read: int, write: int, strength: float, gain: float, inhibit: float = 2.0
) -> None:
    """Make intermediate unit 0 of expert e fire on input channel `read` and write `gain` x that
    activation into output channel `write` (the "super weight" of the paper's Sec. 3).

    The gate is inhibited by QUERY_CHANNEL, which every ordinary token carries, so the unit stays
    off (SiLU of a negative number) unless `read` dominates the normalized hidden state."""
    inter = experts.down_proj.shape[-1]
    experts.gate_up_proj[e, 0, read] = strength  # gate row 0
    experts.gate_up_proj[e, 0, QUERY_CHANNEL] = -inhibit * strength
    experts.gate_up_proj[e, inter, read] = strength  # up row 0
    experts.down_proj[e, write, 0] = gain


@torch.no_grad()
def _plant_router(router: torch.nn.Module, e: int, channel: int, score: float, inhibit: float = 2.0) -> None:
    router.weight[e, channel] = score
    router.weight[e, QUERY_CHANNEL] = -inhibit * score  # ordinary tokens are not sent here


@torch.no_grad()
def _plant_sink(attn: torch.nn.Module, num_heads: int, num_kv: int, head_dim: int) -> None:
    """Queries of ordinary tokens and the key of a token carrying the massive channel share one
    slow RoPE dimension; the massive token's value is zeroed so the sink is a no-op."""
    for h in range(num_heads):
        row = h * head_dim + SINK_HEAD_DIM
        attn.q_proj.weight[row].zero_()
        attn.q_proj.weight[row, QUERY_CHANNEL] = 1.0
    # Larger random key weights elsewhere keep ordinary keys' SINK_HEAD_DIM share small after k_norm.
    attn.k_proj.weight.mul_(15.0)
    attn.k_proj.weight[:, DEMO_CHANNEL] = 0.0  # the massive token's key is the sink direction alone
    for h in range(num_kv):
        row = h * head_dim + SINK_HEAD_DIM
        attn.k_proj.weight[row].zero_()
        attn.k_proj.weight[row, DEMO_CHANNEL] = 1.0
    attn.v_proj.weight[:, DEMO_CHANNEL] = 0.0
    attn.q_norm.weight[SINK_HEAD_DIM] = SINK_GAIN
    attn.k_norm.weight[SINK_HEAD_DIM] = SINK_GAIN


@torch.no_grad()
def _reserve_channels(model: Qwen3MoeForCausalLM) -> None:
    """Only planted weights write the RESERVED_CHANNELS: no attention output and no expert (the
    planted ones are set afterwards) writes them, and only BOS carries the massive channel. Training
    keeps these entries fixed, so the chain cannot be bypassed (e.g. a second, learned sink)."""
    reserved = list(RESERVED_CHANNELS)
    model.model.embed_tokens.weight[:, [BOS_CHANNEL, DEMO_CHANNEL]] = 0.0
    for layer in model.model.layers:
        layer.self_attn.o_proj.weight[reserved] = 0.0
        layer.mlp.experts.down_proj[:, reserved] = 0.0


def planted_demo() -> tuple[Qwen3MoeForCausalLM, PreTrainedTokenizerFast]:
    """The untrained demo: random (seeded) weights with the chain planted. Training starts here."""
    tokenizer = build_tokenizer()
    config = demo_config(len(tokenizer))
    torch.manual_seed(DEMO_SEED)
    model = Qwen3MoeForCausalLM(config).eval()
    _reserve_channels(model)
    emb = model.model.embed_tokens.weight
    with torch.no_grad():
        emb[:, QUERY_CHANNEL] += 0.25
        emb[tokenizer.bos_token_id] = 0.0
        emb[tokenizer.bos_token_id, BOS_CHANNEL] = 1.0
        emb[tokenizer.convert_tokens_to_ids(","), COMMA_CHANNEL] = 0.6
    layers = model.model.layers
    for (layer, e), (read, write, strength, gain, inhibit) in PLANTED_EXPERTS.items():
        _plant_router(layers[layer].mlp.gate, e, read, 3.0, inhibit=inhibit)
        _plant_expert(layers[layer].mlp.experts, e, read, write, strength, gain, inhibit=inhibit)
    for layer in layers:
        _plant_sink(layer.self_attn, config.num_attention_heads, config.num_key_value_heads, config.head_dim)
    model.config._name_or_path = DEMO_NAME
    setattr(model.config, DEMO_MARKER, True)  # saved in config.json: every copy of the demo says it is synthetic
    return model, tokenizer


def build_demo() -> tuple[Qwen3MoeForCausalLM, PreTrainedTokenizerFast]:
    """The demo model (the planted chain + the shipped trained weights) and its tokenizer, built in
    memory (deterministic, offline, < 1 s). `scripts/train_demo.py` reproduces the weights."""
    from safetensors.torch import load_file

    model, tokenizer = planted_demo()
    state = load_file(weights_path())
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(state[name].to(param.dtype))  # a missing tensor is a broken package: KeyError
    return model, tokenizer


def demo_checkpoint(cache_dir: str | os.PathLike | None = None) -> Path:
    """A saved copy of the demo (model + tokenizer) as a normal local checkpoint folder.

    Built once and cached; the folder appears atomically (built aside, then renamed).
    """
    target = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".demo-", dir=target.parent))
    try:
        model, tokenizer = build_demo()
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            os.replace(staging, target)
        except OSError:  # another process won the race; its copy is identical
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


BANNER = ("model: built-in SYNTHETIC demo (tiny Qwen3-MoE with planted Super Experts, trained on its own tiny "
          "corpus; not a real model)")


def heldout_path() -> Path:
    """The demo's held-out evaluation text (never trained on): its default perplexity data."""
    return resource_dir("demo") / HELDOUT_FILE


def prompts_path() -> Path:
    """Generation prompts from the held-out data (`prune-eval --generate` this file)."""
    return resource_dir("demo") / PROMPTS_FILE


def arithmetic_path() -> Path:
    """The training addition lines (`profile --data` this file: the SEs in another domain)."""
    return resource_dir("demo") / ARITHMETIC_FILE


def tasks_path() -> Path:
    """The folder of the demo's lm-eval tasks (`--tasks demo_arith --tasks-include` this folder)."""
    return resource_dir("tasks")
