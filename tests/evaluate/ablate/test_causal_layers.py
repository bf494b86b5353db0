"""The per-layer causal check on planted models (planted.py): a three-step chain of Super Experts
(additive or multiplicative) and an independent outlier ~5x larger than the chain's massive
activation. The verdicts and per-layer numbers are checked against hidden states read with
output_hidden_states, with and without each ablation."""

from __future__ import annotations

import planted
import pytest
import torch

import families
from superexperts.evaluate.ablate import ablate
from superexperts.evaluate.ablate.causal import Peaks, confirm_candidates, judge

CHAIN = [(1, 3, 13.3), (2, 5, 17.0), (3, 6, 23.0)]  # the MA rises 424 -> 966 -> 1,700, as in the issue
LAST = planted.LAYERS - 1
SES = [(layer, e) for layer, e, _ in CHAIN]


def _peaks(model, ids, ablated=()) -> torch.Tensor:
    """(layers, hidden): max over samples and positions of |h| after each layer."""
    if not ablated:
        return families.layer_outputs(model, ids).abs().amax(dim=(1, 2))
    with ablate(model, list(ablated)):
        return families.layer_outputs(model, ids).abs().amax(dim=(1, 2))


def _row(table, expert):
    return table[(table.layer == expert[0]) & (table.expert == expert[1])].iloc[0]


@pytest.mark.parametrize("multiplicative", [True, False])
def test_late_outlier_masks_nothing_and_is_attributed_to_its_own_layer(multiplicative):
    model = planted.build(CHAIN, multiplicative=multiplicative, outlier=(LAST, 2, 280.0))
    ids = planted.windows()
    outlier = (LAST, 2)
    table = confirm_candidates(model, ids, [outlier, *SES])
    original = _peaks(model, ids)
    assert float(original[LAST, planted.OUTLIER_CHANNEL]) > 4 * float(original[:, planted.MA_CHANNEL].max())
    for layer, e in SES:
        row = _row(table, (layer, e))
        ablated = _peaks(model, ids, [(layer, e)])
        channel = int(
            (original[layer] - ablated[layer]).argmax()
        )  # independent: where its removal bites most
        assert row.channel == channel == planted.MA_CHANNEL
        assert row.channel_original == pytest.approx(original[:, channel].tolist(), rel=1e-5, abs=1e-6)
        assert row.channel_ablated == pytest.approx(ablated[:, channel].tolist(), rel=1e-5, abs=1e-6)
        assert row.max_ablated == pytest.approx(ablated.amax(1).tolist(), rel=1e-5)
        assert row.causal and row.causal_layers == list(range(layer, planted.LAYERS))
        assert row.ma_drop < 0.5  # the model-wide measure is masked by the outlier: the bug of issue 12
    out = _row(table, outlier)
    assert out.channel == planted.OUTLIER_CHANNEL and not out.causal and out.causal_layers == []
    assert "last layer" in out.reason
    drops = out.channel_drop
    assert drops[LAST] > 0.99 and max(abs(d) for d in drops[:LAST]) < 1e-6  # its effect: its own layer only
    assert set(table.head(3).apply(lambda r: (r.layer, r.expert), axis=1)) == set(SES)  # causal first


def test_additive_chain_fades_to_a_share_multiplicative_chain_collapses():
    first = SES[0]
    for multiplicative in (True, False):
        model = planted.build(CHAIN, multiplicative=multiplicative, outlier=None)
        ids = planted.windows()
        row = _row(confirm_candidates(model, ids, [first]), first)
        original, ablated = _peaks(model, ids), _peaks(model, ids, [first])
        c = planted.MA_CHANNEL
        share = 1 - float(ablated[LAST, c]) / float(original[LAST, c])
        assert row.channel_drop[LAST] == pytest.approx(share, rel=1e-5)
        assert row.causal and row.causal_layers == list(range(first[0], planted.LAYERS))
        if multiplicative:  # later SEs need the first one's activation: everything collapses
            assert min(row.channel_drop[first[0] :]) > 0.99
        else:  # later SEs fire anyway: the first one is still missing, as a fading share
            assert 0.1 < row.channel_drop[LAST] < 0.5
            gone = float(original[LAST, c] - ablated[LAST, c])
            assert gone == pytest.approx(row.removed, rel=0.05)  # what it wrote is carried to the end


def test_outlier_that_persists_is_causal_at_its_own_layers_only():
    model = planted.build(CHAIN, multiplicative=True, outlier=(LAST - 1, 2, 280.0))
    ids = planted.windows()
    table = confirm_candidates(model, ids, [(LAST - 1, 2), *SES])
    out = _row(table, (LAST - 1, 2))
    assert out.causal and out.causal_layers == [LAST - 1, LAST] and out.channel == planted.OUTLIER_CHANNEL
    assert {(r.layer, r.expert) for r in table.itertuples() if r.causal} == {*SES, (LAST - 1, 2)}


def test_medians_are_means_of_per_batch_medians():
    model = planted.build(CHAIN, multiplicative=True, outlier=None)
    ids = planted.windows(samples=3)
    table = confirm_candidates(model, ids, [SES[0]], batch_size=2)
    batches = [families.layer_outputs(model, b).abs() for b in ids.split(2)]  # (layers, b, T, hidden) each
    expected = torch.stack([b.flatten(1).median(dim=1).values for b in batches]).mean(0)
    assert table.attrs["median_original"] == pytest.approx(expected.tolist(), rel=1e-5)


def _hand(channel_max: list[list[float]], median: float = 0.01) -> Peaks:
    rows = torch.tensor(channel_max)
    return Peaks(rows, torch.full((rows.shape[0],), median), 0.0)


@pytest.mark.parametrize(
    ("ablated", "median", "causal", "layers", "reason"),
    [
        (
            [[1, 1], [1, 1], [1, 1], [1, 1]],
            0.01,
            True,
            [1, 2, 3],
            "still missing",
        ),  # written at 1, carried on
        ([[1, 1], [1, 1], [300, 1], [300, 1]], 0.01, False, [], "not carried on"),  # cancelled at layer 2
        ([[1, 1], [1, 1], [1, 1], [1, 1]], 1.0, False, [], "not a massive activation"),  # 299 < 1000 x median
        ([[1, 1], [1, 1], [300, 1], [1, 1]], 0.01, False, [], "not carried on"),  # back at 3 does not count
    ],
)
def test_judge_on_hand_made_peaks(ablated, median, causal, layers, reason):
    original = _hand([[1, 1], [300, 1], [300, 1], [300, 1]], median)
    verdict = judge(1, original, _hand(ablated), threshold=0.5)
    assert (verdict["causal"], verdict["causal_layers"], verdict["channel"]) == (causal, layers, 0)
    assert reason in verdict["reason"]


def test_judge_no_effect_and_last_layer():
    original = _hand([[1, 1], [300, 1]])
    idle = judge(1, original, original, threshold=0.5)
    assert idle["channel"] is None and idle["meaningful"] is False and not idle["causal"]
    last = judge(1, original, _hand([[1, 1], [1, 1]]), threshold=0.5)
    assert last["massive_own"] and not last["causal"] and "last layer" in last["reason"]
