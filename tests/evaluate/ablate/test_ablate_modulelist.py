"""ModuleList (transformers 4.x / remote-code) experts: every mode matches the fused layout exactly."""

from __future__ import annotations

import pytest
import torch

import families
import legacy
from ablate_helpers import assert_same_state, state_snapshot
from superexperts.evaluate.ablate import ablate, expert_mean_outputs
from superexperts.models.adapters import map_model

EXPERTS = [(0, 1), (1, 3), (1, 6)]


@pytest.fixture(scope="module")
def pair():
    fused = families.build("mixtral")
    old = legacy.legacy_mixtral(families.build("mixtral"))  # same seed: same weights, 4.x structure
    assert map_model(old).moe[0].layout == "modulelist"
    return fused, old


@pytest.mark.parametrize("mode", ["zero", "mean", "skip"])
@torch.no_grad()
def test_modulelist_matches_fused(pair, calib_ids, mode):
    fused, old = pair
    before = state_snapshot(old)
    means = {}
    if mode == "mean":
        means = {name: expert_mean_outputs(m, calib_ids) for name, m in (("fused", fused), ("old", old))}
        for key in EXPERTS:
            torch.testing.assert_close(means["old"][key], means["fused"][key], atol=1e-5, rtol=1e-4)
    with ablate(fused, EXPERTS, mode=mode, means=means.get("fused")):
        expected = fused(calib_ids).logits
    with ablate(old, EXPERTS, mode=mode, means=means.get("old")):
        got = old(calib_ids).logits
    assert not torch.allclose(expected, fused(calib_ids).logits, atol=1e-4)  # the ablation changed something
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert_same_state(old, before)
    torch.testing.assert_close(old(calib_ids).logits, fused(calib_ids).logits, atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_modulelist_skip_never_routes(pair, calib_ids):
    _, old = pair
    block = map_model(old).moe[1]
    rows = torch.zeros(block.num_experts, dtype=torch.long)

    def count(e):
        return lambda m, args: rows.__setitem__(e, rows[e] + args[0].reshape(-1, args[0].shape[-1]).shape[0])

    hooks = [block.experts[e].register_forward_pre_hook(count(e)) for e in range(block.num_experts)]
    try:
        with ablate(old, [(1, 3), (1, 6)], mode="skip"):
            old(calib_ids)
    finally:
        for h in hooks:
            h.remove()
    assert rows[[3, 6]].sum() == 0 and rows.sum() == calib_ids.numel() * block.block.top_k
