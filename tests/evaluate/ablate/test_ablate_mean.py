"""mean mode: the expert's output is replaced by its mean output over the calibration tokens."""

from __future__ import annotations

import pytest
import torch

from ablate_helpers import expert_contribution, fused_expert_output, record_block
from superexperts.capture import experts_fn
from superexperts.evaluate.ablate import ablate, expert_mean_outputs
from superexperts.models.adapters import map_model
from superexperts.runs.errors import UserError


def _mean_by_hand(block, rec: dict, e: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean output of expert e over its routed rows, (tokens,) routed mask) from recorded traffic."""
    x = rec["x"]
    if block.layout == "dense_routed":
        routed = rec["scores"][:, e] > 0
        outs = fused_expert_output(block.experts, e, x[routed] * rec["scores"][routed, e : e + 1])
    else:
        routed = (rec["index"] == e).any(-1)
        outs = fused_expert_output(block.experts, e, x[routed])
    return outs.mean(0), routed


@pytest.mark.parametrize("family", ["qwen3_moe", "gpt_oss", "llama4"])
@torch.no_grad()
def test_mean_replaces_output_by_its_mean(family, calib_ids):
    import families

    model = families.build(family)
    block = map_model(model).moe[1]
    with record_block(block) as rec:
        model(calib_ids)
    e = 3
    mean, routed = _mean_by_hand(block, rec, e)
    assert routed.sum() > 1
    means = expert_mean_outputs(model, calib_ids, batch_size=len(calib_ids))
    torch.testing.assert_close(means[(block.layer, e)], mean, atol=1e-5, rtol=1e-4)

    if block.layout == "dense_routed":
        new = routed[:, None] * mean  # the mean replaces the whole contribution (score folded in)
    else:
        weight = (rec["weights"] * (rec["index"] == e)).sum(-1, keepdim=True)
        new = weight * mean
    expected = rec["out"] - expert_contribution(block, rec, e) + new
    with ablate(model, [(block.layer, e)], mode="mean", means=means), record_block(block) as rec2:
        model(calib_ids)
    torch.testing.assert_close(rec2["out"], expected, atol=1e-4, rtol=1e-4)
    assert experts_fn.active_output_edits() == 0


@torch.no_grad()
def test_mean_shared_expert(calib_ids):
    import families

    model = families.build("deepseek_v2")
    block = map_model(model).moe[0]
    means = expert_mean_outputs(model, calib_ids)
    with record_block(block) as rec:
        model(calib_ids)
    shared_down_out = []
    h = block.shared_down.register_forward_hook(lambda m, a, o: shared_down_out.append(o.reshape(-1, o.shape[-1])))
    model(calib_ids)
    h.remove()
    by_hand = torch.cat(shared_down_out).mean(0)
    torch.testing.assert_close(means[(block.layer, "shared")], by_hand, atol=1e-5, rtol=1e-4)
    expected = rec["out"] - block.shared(rec["x"]) + by_hand
    with ablate(model, [(block.layer, "shared")], mode="mean", means=means), record_block(block) as rec2:
        model(calib_ids)
    torch.testing.assert_close(rec2["out"], expected, atol=1e-4, rtol=1e-4)


def test_mean_needs_means(tiny_qwen3):
    with pytest.raises(UserError, match="expert_mean_outputs"), ablate(tiny_qwen3, [(0, 1)], mode="mean"):
        pass
    with pytest.raises(UserError, match="no mean output for 0:1"), ablate(tiny_qwen3, [(0, 1)], mode="mean",
                                                                           means={}):
        pass


@torch.no_grad()
def test_nested_mean_ablations_compose_and_unwind(tiny_qwen3, calib_ids):
    means = expert_mean_outputs(tiny_qwen3, calib_ids)
    with ablate(tiny_qwen3, [(0, 1), (0, 2)], mode="mean", means=means):
        both = tiny_qwen3(calib_ids).logits
    with ablate(tiny_qwen3, [(0, 1)], mode="mean", means=means):
        inner_means = expert_mean_outputs(tiny_qwen3, calib_ids)  # must not drop the active edit
        with ablate(tiny_qwen3, [(0, 2)], mode="mean", means=means):
            nested = tiny_qwen3(calib_ids).logits
        assert experts_fn.active_output_edits() == 1  # the outer edit is still there
    assert experts_fn.active_output_edits() == 0
    torch.testing.assert_close(nested, both)
    torch.testing.assert_close(inner_means[(0, 1)], means[(0, 1)])  # replaced rows average to the mean
