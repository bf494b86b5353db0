"""skip mode: the skipped expert is never routed to; the others are renormalised as usual."""

from __future__ import annotations

import pytest
import torch

from ablate_helpers import assert_same_state, record_block, state_snapshot
from superexperts.evaluate.ablate import ablate
from superexperts.models.adapters import map_model
from superexperts.runs.errors import UserError


def _routed_counts(rec: dict, block) -> torch.Tensor:
    if block.layout == "dense_routed":
        return (rec["scores"] > 0).sum(0)
    return torch.bincount(rec["index"].reshape(-1), minlength=block.num_experts)


@torch.no_grad()
def test_skip_never_routes_to_skipped_experts(family_model, calib_ids):
    _family, model = family_model
    block = map_model(model).moe[1]
    with record_block(block) as rec:
        model(calib_ids)
    skipped = _routed_counts(rec, block).argsort(descending=True)[:2].tolist()  # the busiest two
    assert _routed_counts(rec, block)[skipped].min() > 0
    with ablate(model, [(block.layer, e) for e in skipped], mode="skip"), record_block(block) as rec2:
        model(calib_ids)
    counts = _routed_counts(rec2, block)
    assert counts[skipped].sum() == 0
    assert counts.sum() == _routed_counts(rec, block).sum()  # still top-k experts per token
    with record_block(block) as rec3:  # hooks gone: routing is back
        model(calib_ids)
    assert torch.equal(_routed_counts(rec3, block), _routed_counts(rec, block))


@torch.no_grad()
def test_skip_renormalises_like_the_router(tiny_qwen3, calib_ids):
    block = map_model(tiny_qwen3).moe[0]
    skipped = [2, 5]
    with ablate(tiny_qwen3, [(0, e) for e in skipped], mode="skip"), record_block(block) as rec:
        tiny_qwen3(calib_ids)
    # Independent: softmax over the logits without the skipped experts, top-k, renormalise.
    logits = rec["x"] @ block.router.weight.T
    logits[:, skipped] = float("-inf")
    probs = logits.softmax(-1)
    top, index = probs.topk(block.router.top_k, dim=-1)
    if block.router.norm_topk_prob:
        top = top / top.sum(-1, keepdim=True)
    assert torch.equal(rec["index"], index)
    torch.testing.assert_close(rec["weights"], top)


@pytest.mark.parametrize("experts, match", [([(0, "shared")], "shared experts are not routed"),
                                            ([(0, e) for e in range(7)], "fewer than its top-k")])
def test_skip_bad_input(experts, match):
    import families

    model = families.build("qwen2_moe")
    before = state_snapshot(model)
    with pytest.raises(UserError, match=match), ablate(model, experts, mode="skip"):
        pass
    assert_same_state(model, before)
    assert all(not b.block._forward_hooks and not b.block._forward_pre_hooks for b in map_model(model).moe)


def test_skip_hooks_removed_after_exception(tiny_qwen3, calib_ids):
    with pytest.raises(RuntimeError, match="boom"), ablate(tiny_qwen3, [(1, 0)], mode="skip"):
        raise RuntimeError("boom")
    block = map_model(tiny_qwen3).moe[1]
    assert not block.block._forward_hooks and not block.router._forward_pre_hooks
    assert torch._C._len_torch_function_stack() == 0


@torch.no_grad()
def test_skip_beats_a_score_correction_bias(calib_ids):
    """DeepSeek-V3 ranks sigmoid(logit) + bias: a -inf logit alone would still win with a large bias."""
    import families

    model = families.build("deepseek_v3")
    block = map_model(model).moe[1]
    block.router.e_score_correction_bias[[2, 5]] = 10.0
    with ablate(model, [(block.layer, 2), (block.layer, 5)], mode="skip"), record_block(block) as rec:
        model(calib_ids)
    assert _routed_counts(rec, block)[[2, 5]].sum() == 0
