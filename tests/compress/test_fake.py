"""fake_quantized: the chosen experts' weights equal an independent RTN, nothing else changes, the
model comes back bit for bit (also on exceptions), and every layout agrees with the fused one."""

from __future__ import annotations

import pytest
import torch
from rtn_reference import reference_rtn

import families
import legacy
from superexperts.compress.quant import Scheme, all_experts, fake_quantized
from superexperts.models.adapters import map_model
from superexperts.runs.errors import UserError

IDS = families.random_ids(samples=2, seq_len=12)


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_state(model: torch.nn.Module, saved: dict[str, torch.Tensor]) -> bool:
    """Bit for bit (torch.equal: same values, NaN never equal; weights here are finite)."""
    return all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("family", families.FAMILIES)
def test_restore_is_bit_exact_also_on_exceptions(family):
    model = families.build(family)
    before = snapshot(model)
    scheme = Scheme(bits=3, group_size=8, act_bits=None if family == "llama4" else 8)
    with torch.no_grad():
        logits = model(IDS).logits
        with fake_quantized(model, all_experts(map_model(model)), scheme):
            assert not same_state(model, before)
            assert not torch.allclose(model(IDS).logits, logits)
        assert same_state(model, before) and torch.equal(model(IDS).logits, logits)
        with pytest.raises(RuntimeError, match="boom"), fake_quantized(model, all_experts(map_model(model)), scheme):
            raise RuntimeError("boom")
        assert same_state(model, before) and torch.equal(model(IDS).logits, logits)


@pytest.mark.parametrize(("family", "transposed"), [("qwen3_moe", False), ("gpt_oss", True)])
def test_only_the_chosen_expert_slices_change_and_equal_independent_rtn(family, transposed):
    model = families.build(family)
    experts = map_model(model).block(1).experts
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    with fake_quantized(model, [(1, 3), (1, 6)], Scheme(bits=4, group_size=8)):
        for name, p in model.named_parameters():
            if not name.startswith("model.layers.1.mlp.experts.") or p.dim() != 3:
                assert torch.equal(p, original[name]), name  # biases, routers, other layers untouched
                continue
            for e in range(p.shape[0]):
                w = original[name][e]
                if e not in (3, 6):
                    assert torch.equal(p[e], w), (name, e)
                    continue
                rows = w.T if transposed else w  # (out, in): groups run along the input dim
                want = torch.from_numpy(reference_rtn(rows.numpy(), 4, 8))
                torch.testing.assert_close(p[e], want.T if transposed else want, rtol=1e-6, atol=1e-7)
    assert experts.is_transposed is transposed


def test_shared_expert_linears_are_quantized():
    model = families.build("deepseek_v3")
    shared = map_model(model).block(1).shared
    before = {n: p.detach().clone() for n, p in shared.named_parameters()}
    with fake_quantized(model, [(1, "shared")], Scheme(bits=2)):
        for name, p in shared.named_parameters():
            want = torch.from_numpy(reference_rtn(before[name].numpy(), 2))
            torch.testing.assert_close(p, want, rtol=1e-6, atol=1e-7)
    assert all(torch.equal(p, before[n]) for n, p in shared.named_parameters())


@pytest.mark.parametrize("act_bits", [None, 4])
def test_modulelist_experts_match_fused(act_bits):
    """Two code paths (fused slices + experts_fn input edit, Linear weights + pre-hooks) give one model."""
    fused = families.build("mixtral")
    old = legacy.legacy_mixtral(families.build("mixtral"))
    assert map_model(old).moe[0].layout == "modulelist"
    experts, scheme = [(0, 1), (1, 3), (1, 6), (3, 0)], Scheme(bits=3, group_size=8, act_bits=act_bits)
    with torch.no_grad():
        with fake_quantized(fused, experts, scheme):
            expected = fused(IDS).logits
        with fake_quantized(old, experts, scheme):
            got = old(IDS).logits
        without_acts = None
        if act_bits:
            with fake_quantized(fused, experts, Scheme(bits=3, group_size=8)):
                without_acts = fused(IDS).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    if without_acts is not None:  # the activation quantization did something
        assert not torch.allclose(expected, without_acts, atol=1e-4)


def test_empty_list_changes_nothing():
    model = families.build("qwen3_moe")
    with torch.no_grad():
        logits = model(IDS).logits
        with fake_quantized(model, [], Scheme(bits=2)):
            assert torch.equal(model(IDS).logits, logits)


@pytest.mark.parametrize(("family", "scheme", "message"), [
    ("llama4", Scheme(bits=4, act_bits=8), "drop --act-bits"),
    ("qwen3_moe", Scheme(bits=4, group_size=5), "--group-size 5 does not divide"),
    ("qwen3_moe", Scheme(bits=7), "--bits 7"),
])  # fmt: skip
def test_refused_before_anything_changes(family, scheme, message):
    model = families.build(family)
    before = snapshot(model)
    with pytest.raises(UserError, match=message), fake_quantized(model, [(1, 2)], scheme):
        pass
    assert same_state(model, before)
