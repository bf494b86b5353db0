"""Tiny random models of every supported MoE family, built from transformers config classes.

Shared by the tests (through conftest.py fixtures) and the benchmarks. Sizes are chosen so a
forward over a few short sequences takes milliseconds on CPU.
"""

from __future__ import annotations

import string

import torch
import transformers as tf
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

VOCAB = 128
COMMON = {"vocab_size": VOCAB, "hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2,
              "max_position_embeddings": 256, "tie_word_embeddings": False}  # fmt: skip


def _qwen3_moe():
    return tf.Qwen3MoeConfig(**COMMON, head_dim=8, intermediate_size=48, moe_intermediate_size=16,
                             num_hidden_layers=4, num_experts=8, num_experts_per_tok=2, mlp_only_layers=[3])


def _qwen2_moe():
    return tf.Qwen2MoeConfig(**COMMON, intermediate_size=48, moe_intermediate_size=16,
                             shared_expert_intermediate_size=24, num_hidden_layers=4, num_experts=8,
                             num_experts_per_tok=2)


def _deepseek_v2():
    return tf.DeepseekV2Config(**COMMON, intermediate_size=48, moe_intermediate_size=16, num_hidden_layers=4,
                               n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=2,
                               first_k_dense_replace=1, kv_lora_rank=16, q_lora_rank=None,
                               qk_rope_head_dim=4, qk_nope_head_dim=4, v_head_dim=8, n_group=1, topk_group=1)


def _deepseek_v3():
    return tf.DeepseekV3Config(**COMMON, intermediate_size=48, moe_intermediate_size=16, num_hidden_layers=4,
                               n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=2,
                               first_k_dense_replace=1, kv_lora_rank=16, q_lora_rank=24,
                               qk_rope_head_dim=4, qk_nope_head_dim=4, v_head_dim=8, n_group=2, topk_group=1)


def _mixtral():
    return tf.MixtralConfig(**COMMON, intermediate_size=24, num_hidden_layers=4, num_local_experts=8,
                            num_experts_per_tok=2)


def _olmoe():
    return tf.OlmoeConfig(**COMMON, intermediate_size=16, num_hidden_layers=4, num_experts=8,
                          num_experts_per_tok=2)


def _gpt_oss():
    return tf.GptOssConfig(**COMMON, head_dim=8, intermediate_size=16, num_hidden_layers=4,
                           num_local_experts=8, num_experts_per_tok=2, sliding_window=8,
                           layer_types=["sliding_attention", "full_attention"] * 2)


def _glm4_moe():
    return tf.Glm4MoeConfig(**COMMON, head_dim=8, intermediate_size=48, moe_intermediate_size=16,
                            num_hidden_layers=4, n_routed_experts=8, n_shared_experts=1,
                            num_experts_per_tok=2, first_k_dense_replace=1, n_group=1, topk_group=1)


def _llama4():
    return tf.Llama4TextConfig(**COMMON, head_dim=8, intermediate_size=16, intermediate_size_mlp=48,
                               num_hidden_layers=4, num_local_experts=8, num_experts_per_tok=1,
                               interleave_moe_layer_step=1, no_rope_layers=[1, 1, 1, 1])


CONFIGS = {
    "qwen3_moe": (_qwen3_moe, tf.Qwen3MoeForCausalLM),
    "qwen2_moe": (_qwen2_moe, tf.Qwen2MoeForCausalLM),
    "deepseek_v2": (_deepseek_v2, tf.DeepseekV2ForCausalLM),
    "deepseek_v3": (_deepseek_v3, tf.DeepseekV3ForCausalLM),
    "mixtral": (_mixtral, tf.MixtralForCausalLM),
    "olmoe": (_olmoe, tf.OlmoeForCausalLM),
    "gpt_oss": (_gpt_oss, tf.GptOssForCausalLM),
    "glm4_moe": (_glm4_moe, tf.Glm4MoeForCausalLM),
    "llama4": (_llama4, tf.Llama4ForCausalLM),
}
FAMILIES = sorted(CONFIGS)


def build(family: str, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """A tiny random model of `family` in eval mode. Router and expert weights are given a
    larger scale than init so routing is not uniform and expert outputs differ."""
    make_config, cls = CONFIGS[family]
    return build_from(cls, make_config(), seed, dtype)


def build_from(cls, config, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """`build` for any config (e.g. sizes a test needs)."""
    torch.manual_seed(seed)
    model = cls(config).to(dtype).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "experts" in name or "router" in name or name.endswith("gate.weight"):
                p.normal_(0, 0.3)
            if "e_score_correction_bias" in name:
                p.zero_()
    return model


def random_ids(samples: int = 4, seq_len: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (samples, seq_len), generator=g)


SPECIALS = ["<pad>", "<unk>", "<eos>"]


def char_tokenizer() -> tf.PreTrainedTokenizerFast:
    """One token per printable character (103 ids, inside the tiny models' 128-token vocabulary)."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS + list(string.printable))}
    assert len(vocab) <= VOCAB
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every char, newlines too
    backend.decoder = decoders.Fuse()
    return tf.PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>",
                                      eos_token="<eos>")


@torch.no_grad()
def layer_outputs(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """(layers, samples, T, hidden): every decoder layer's output, from output_hidden_states with the
    final norm bypassed (transformers applies it to the last entry). An independent reference for
    what the package's hooks record."""
    norm, model.model.norm = model.model.norm, torch.nn.Identity()
    try:
        hidden = model(input_ids=ids, output_hidden_states=True, use_cache=False).hidden_states
    finally:
        model.model.norm = norm
    return torch.stack(hidden[1:])
