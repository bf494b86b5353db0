"""Causal confirmation on the demo model: planted SEs first, the late-layer outlier non-causal."""

from __future__ import annotations

import pytest
import torch

from superexperts.evaluate.ablate import ablate
from superexperts.evaluate.ablate.causal import confirm_candidates
from superexperts.models.demo import DEMO_OUTLIER, DEMO_SUPER_EXPERTS, build_demo, builtin_text
from superexperts.runs.errors import UserError


@pytest.fixture(scope="module")
def demo():
    model, tokenizer = build_demo()
    ids = tokenizer(builtin_text(), return_tensors="pt").input_ids[0]
    # Two BOS-first windows that contain ',' (the outlier's trigger).
    body = ids[ids != tokenizer.bos_token_id][:62]
    assert (body == tokenizer.convert_tokens_to_ids(",")).any()
    windows = torch.stack([torch.cat([ids[:1], body[:31]]), torch.cat([ids[:1], body[31:]])])
    return model, windows


@torch.no_grad()
def _ma_after(model, windows, layer: int) -> float:
    """Independent: max |hidden| over the outputs of decoder layers >= layer."""
    norm, model.model.norm = model.model.norm, torch.nn.Identity()  # the last entry is normed otherwise
    try:
        hidden = model(windows, output_hidden_states=True).hidden_states  # embeddings, then one per layer
    finally:
        model.model.norm = norm
    return max(float(h.abs().max()) for h in hidden[layer + 1 :])


def test_planted_ses_rank_first_outlier_is_not_causal(demo):
    model, windows = demo
    non_se = [(1, 0), (2, 7)]
    candidates = [DEMO_OUTLIER, *non_se, *DEMO_SUPER_EXPERTS]
    table = confirm_candidates(model, windows, candidates, batch_size=2)
    top = {(int(r.layer), int(r.expert)) for r in table.head(2).itertuples()}
    assert top == set(DEMO_SUPER_EXPERTS)
    causal = {(int(r.layer), int(r.expert)) for r in table[table.causal].itertuples()}
    assert causal == set(DEMO_SUPER_EXPERTS)
    outlier = table[(table.layer == DEMO_OUTLIER[0]) & (table.expert == DEMO_OUTLIER[1])].iloc[0]
    assert abs(outlier.ma_drop) < 0.01
    # The numbers are the MA measured independently, with and without the ablation.
    se_layer, se = DEMO_SUPER_EXPERTS[0]
    row = table[(table.layer == se_layer) & (table.expert == se)].iloc[0]
    assert row.ma_original == pytest.approx(_ma_after(model, windows, se_layer), rel=1e-5)
    with ablate(model, [(se_layer, se)]):
        assert row.ma_ablated == pytest.approx(_ma_after(model, windows, se_layer), rel=1e-5)
    assert row.loss_delta == pytest.approx(row.loss_ablated - row.loss_original)


def test_causal_bad_input(demo):
    model, windows = demo
    with pytest.raises(UserError, match="threshold"):
        confirm_candidates(model, windows, [(1, 13)], threshold=50)
    with pytest.raises(UserError, match="out of range"):
        confirm_candidates(model, windows, [(1, 640)])
