"""zero mode: removes exactly the chosen experts' contribution; weights come back bit-for-bit."""

from __future__ import annotations

import pytest
import torch

from ablate_helpers import assert_same_state, expert_contribution, record_block, state_snapshot
from superexperts.evaluate.ablate import ablate, apply_ablation
from superexperts.models.adapters import map_model
from superexperts.runs.errors import UserError


def _routed_expert(rec: dict, block) -> int:
    """An expert that received tokens in this batch (so the test is not vacuous)."""
    if block.layout == "dense_routed":
        return int((rec["scores"] > 0).sum(0).argmax())
    return int(torch.bincount(rec["index"].reshape(-1), minlength=block.num_experts).argmax())


@torch.no_grad()
def test_zero_removes_exactly_the_expert_contribution(family_model, calib_ids):
    _family, model = family_model
    block = map_model(model).moe[1]
    with record_block(block) as rec:
        model(calib_ids)
    orig, e = rec["out"], _routed_expert(rec, block)
    expected = orig - expert_contribution(block, rec, e)
    assert (expected - orig).abs().max() > 1e-3  # the expert mattered
    with ablate(model, [(block.layer, e)], mode="zero"), record_block(block) as rec2:
        model(calib_ids)
    torch.testing.assert_close(rec2["out"], expected, atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_zero_shared_expert_removes_its_output(calib_ids):
    import families

    model = families.build("deepseek_v3")
    block = map_model(model).moe[0]
    with record_block(block) as rec:
        model(calib_ids)
    expected = rec["out"] - block.shared(rec["x"])  # DeepSeek adds the shared MLP output as is
    with ablate(model, [(block.layer, "shared")]), record_block(block) as rec2:
        model(calib_ids)
    torch.testing.assert_close(rec2["out"], expected, atol=1e-5, rtol=1e-5)


def _many(model) -> list:
    mm = map_model(model)
    experts = [(b.layer, e) for b in mm.moe for e in (0, b.num_experts - 1)]
    return experts + [(b.layer, "shared") for b in mm.moe if b.shared is not None]


@torch.no_grad()
def test_restore_is_bit_for_bit(family_model, calib_ids):
    _family, model = family_model
    before = state_snapshot(model)
    logits = model(calib_ids).logits
    with ablate(model, _many(model)):
        assert not torch.equal(model(calib_ids).logits, logits)
    assert_same_state(model, before)
    assert torch.equal(model(calib_ids).logits, logits)


@torch.no_grad()
def test_restore_after_exception_and_persistent_handle(tiny_qwen3, calib_ids):
    before = state_snapshot(tiny_qwen3)
    with pytest.raises(RuntimeError, match="boom"), ablate(tiny_qwen3, _many(tiny_qwen3)):
        raise RuntimeError("boom")
    assert_same_state(tiny_qwen3, before)
    handle = apply_ablation(tiny_qwen3, [(0, 1), (1, 2)])
    assert handle.active and not torch.equal(tiny_qwen3.model.layers[0].mlp.experts.down_proj[1], before[
        "model.layers.0.mlp.experts.down_proj"][1])
    handle.restore()
    handle.restore()  # idempotent
    assert_same_state(tiny_qwen3, before)


@pytest.mark.parametrize(
    "experts, match",
    [
        ([], "empty"),
        ([(9, 0)], "out of range"),
        ([(-1, 0)], "out of range"),
        ([(0, 8)], "out of range"),
        ([(1, 0), (0, "shared")], "no shared expert"),
        ([(3, 0)], "no routed experts"),  # qwen3 tiny: layer 3 is mlp_only
    ],
)
def test_bad_input_fails_before_touching_the_model(tiny_qwen3, experts, match):
    before = state_snapshot(tiny_qwen3)
    with pytest.raises(UserError, match=match), ablate(tiny_qwen3, experts):
        pass
    assert_same_state(tiny_qwen3, before)


def test_unknown_mode_suggests(tiny_qwen3):
    with pytest.raises(UserError, match="Did you mean 'zero'"):
        apply_ablation(tiny_qwen3, [(0, 1)], mode="zeros")
