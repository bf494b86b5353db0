"""The recording attention function against an explicit softmax(QK^T) on each attention flavour."""

from __future__ import annotations

import pytest
import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

import families
from superexperts.evaluate.sinks.attention import attention_implementation, record_sinks

REFERENCE = "superexperts_test_explicit"
PROBS: dict[int, torch.Tensor] = {}  # id(module) -> (batch, heads, T, T) probabilities
VISIBLE: dict[int, torch.Tensor] = {}  # id(module) -> (batch, 1|heads, T, T) bool


def explicit_attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """Full softmax(QK^T) with every key head repeated to its query heads, the additive eager mask,
    and GPT-OSS's sink logit as an extra softmax column; stores the probabilities."""
    groups = query.shape[1] // key.shape[1]
    k = key.repeat_interleave(groups, dim=1).float()
    v = value.repeat_interleave(groups, dim=1).float()
    logits = query.float() @ k.transpose(-1, -2) * scaling + attention_mask.float()
    sinks = kwargs.get("s_aux")
    if sinks is not None:
        extra = sinks.float().view(1, -1, 1, 1).expand(*logits.shape[:-1], 1)
        probs = torch.softmax(torch.cat([logits, extra], dim=-1), dim=-1)[..., :-1]
    else:
        probs = torch.softmax(logits, dim=-1)
    PROBS[id(module)] = probs
    VISIBLE[id(module)] = attention_mask > torch.finfo(attention_mask.dtype).min / 2
    return (probs @ v).transpose(1, 2).to(query.dtype), probs


AttentionInterface.register(REFERENCE, explicit_attention)
AttentionMaskInterface.register(REFERENCE, ALL_MASK_ATTENTION_FUNCTIONS["eager"])


def attention_modules(model):
    layers = model.model.layers
    return [layer.self_attn for layer in layers]


def reference_probs(model, ids):
    PROBS.clear()
    VISIBLE.clear()
    with torch.no_grad(), attention_implementation(model, REFERENCE):
        model(input_ids=ids, use_cache=False)
    mods = attention_modules(model)
    return [PROBS[id(m)] for m in mods], [VISIBLE[id(m)] for m in mods]


FLAVOURS = ["qwen3_moe", "gpt_oss", "deepseek_v3"]  # GQA, sliding window + learned sinks, MLA


@pytest.mark.parametrize("family", FLAVOURS)
@pytest.mark.parametrize("chunk_elements", [1, 1 << 22])  # one query per chunk, and one chunk for all
def test_sink_mass_matches_explicit_softmax(family, chunk_elements):
    model = families.build(family)
    ids = families.random_ids(samples=2, seq_len=12)
    probs, visible = reference_probs(model, ids)
    sets = [(0,), (0, 3)]
    with torch.no_grad(), record_sinks(model, sets, key_mass=True, chunk_elements=chunk_elements) as rec:
        model(input_ids=ids, use_cache=False)
    assert sorted(rec.layers) == list(range(len(probs)))
    for layer, p in enumerate(probs):
        got = rec.layers[layer]
        torch.testing.assert_close(got.mass[..., 0], p[..., 0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(got.mass[..., 1], p[..., 0] + p[..., 3], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(got.visible[..., 0], visible[layer][..., 0].expand_as(got.visible[..., 0]))
        column = p[:, :, 1:, :].sum(2)  # key mass over queries t > 0
        torch.testing.assert_close(got.key_mass, column, atol=1e-4, rtol=1e-4)


def test_sliding_window_layers_hide_the_first_token_from_far_queries():
    model = families.build("gpt_oss")  # window 8 on layers 0 and 2
    ids = families.random_ids(samples=1, seq_len=20)
    with torch.no_grad(), record_sinks(model) as rec:
        model(input_ids=ids, use_cache=False)
    t = torch.arange(20)
    for layer in range(4):
        expected = t < 8 if layer in (0, 2) else torch.ones(20, dtype=torch.bool)
        assert torch.equal(rec.layers[layer].visible[0, 0, :, 0], expected)
        assert torch.all(rec.layers[layer].mass[0, :, ~expected, 0] == 0)


def test_gpt_oss_sink_logit_takes_mass_from_the_keys():
    """With a huge learned sink logit nearly all probability goes to the virtual sink column."""
    model = families.build("gpt_oss")
    with torch.no_grad():
        for m in attention_modules(model):
            m.sinks.fill_(30.0)
    ids = families.random_ids(samples=1, seq_len=12)
    with torch.no_grad(), record_sinks(model, [(0,), tuple(range(12))]) as rec:
        model(input_ids=ids, use_cache=False)
    assert rec.layers[1].mass[..., 1].max() < 1e-6  # all real keys together get almost nothing


@pytest.mark.parametrize("family", FLAVOURS)
def test_outputs_unchanged_and_config_restored(family):
    model = families.build(family)
    ids = families.random_ids(samples=2, seq_len=16)
    before = model.config._attn_implementation
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        with record_sinks(model):
            got = model(input_ids=ids).logits
    assert torch.equal(expected, got)
    assert model.config._attn_implementation == before
    with pytest.raises(ZeroDivisionError), record_sinks(model):
        raise ZeroDivisionError("interrupted while recording")
    assert model.config._attn_implementation == before


def test_recording_never_materialises_t_by_t():
    """T = 2048 on a one-layer model: no tensor created during the recorded forward reaches T x T."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class LargestOutput(TorchDispatchMode):
        largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(t, torch.Tensor):
                    LargestOutput.largest = max(LargestOutput.largest, t.numel())
            return out

    make_config, cls = families.CONFIGS["qwen3_moe"]
    config = make_config()
    config.num_hidden_layers, config.mlp_only_layers, config.max_position_embeddings = 1, [], 2048
    torch.manual_seed(0)
    model = cls(config).eval()
    t = 2048
    ids = torch.randint(0, families.VOCAB, (1, t))
    chunk = 1 << 20  # a quarter of T x T
    with torch.no_grad(), record_sinks(model, chunk_elements=chunk) as rec, LargestOutput():
        model(input_ids=ids, use_cache=False)
    assert rec.layers[0].mass.shape == (1, 4, t, 1)
    assert LargestOutput.largest <= max(chunk, t * config.vocab_size) < t * t
