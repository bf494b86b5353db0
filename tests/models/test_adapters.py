"""The adapter layer resolves every family's experts by structure, and refuses non-MoE models."""

from __future__ import annotations

import pytest
import transformers as tf

import families
from superexperts.models.adapters import map_model
from superexperts.runs.errors import UserError

# What each family's config says, independently of the adapter: (moe layers, dense layers, shared).
EXPECTED = {
    "qwen3_moe": ([0, 1, 2], [3], False),
    "qwen2_moe": ([0, 1, 2, 3], [], True),
    "deepseek_v2": ([1, 2, 3], [0], True),
    "deepseek_v3": ([1, 2, 3], [0], True),
    "mixtral": ([0, 1, 2, 3], [], False),
    "olmoe": ([0, 1, 2, 3], [], False),
    "gpt_oss": ([0, 1, 2, 3], [], False),
    "glm4_moe": ([1, 2, 3], [0], True),
    "llama4": ([0, 1, 2, 3], [], True),
}


def test_every_family_maps(family_model):
    family, model = family_model
    mm = map_model(model)
    moe, dense, shared = EXPECTED[family]
    assert [b.layer for b in mm.moe] == moe
    assert [d.layer for d in mm.dense] == dense
    assert all((b.shared is not None) == shared for b in mm.moe)
    assert all(b.num_experts == 8 for b in mm.moe)
    assert {b.layout for b in mm.moe} == {"dense_routed" if family == "llama4" else "fused"}
    assert all(b.router is not None and b.router.weight.shape[0] == 8 for b in mm.moe)


def test_dense_model_is_refused_with_a_clear_message():
    config = tf.Qwen3Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                            num_attention_heads=2, num_key_value_heads=1, head_dim=8)  # fmt: skip
    with pytest.raises(UserError, match="no routed experts"):
        map_model(tf.Qwen3ForCausalLM(config))


def test_module_without_layers_is_refused():
    import torch

    with pytest.raises(UserError, match="no decoder layers"):
        map_model(torch.nn.Linear(3, 3))


def test_block_lookup_names_the_moe_layers():
    mm = map_model(families.build("deepseek_v3"))
    with pytest.raises(UserError, match=r"MoE layers are \[1, 2, 3\]"):
        mm.block(0)


def test_hybrid_layers_are_resolved_from_structure():
    """Nemotron-H keeps every block at `layers.N.mixer` (Mamba, attention, MLP or MoE): each layer maps as
    its config's layers_block_type says, the non-MoE, non-MLP ones listed as `other`."""
    import registry

    model = registry.build(registry.family("nemotron_h"))
    kinds = model.config.layers_block_type
    mm = map_model(model)
    assert [b.layer for b in mm.moe] == [i for i, k in enumerate(kinds) if k == "moe"]
    assert [d.layer for d in mm.dense] == [i for i, k in enumerate(kinds) if k == "mlp"]
    assert list(mm.other) == [i for i, k in enumerate(kinds) if k not in ("moe", "mlp")]
    assert mm.family == "nemotron_h" and mm.layers is model.model.layers
