"""`reap`: REAP's own Super Expert rule (signed max, routed experts, MoE-layer cut) on hand-built tables."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from expert_tables import background, expert_table
from superexperts.identify import rules
from superexperts.runs.errors import UserError


def reap_reference(observer_data: dict[int, dict[str, torch.Tensor]]) -> torch.Tensor:
    """CerebrasResearch/reap src/reap/model_util.py `get_super_expert_indices` as it is written
    (include_last_layers=False): rows are MoE layers in observer order."""
    all_max = [layer["max_activations"] for layer in observer_data.values()]
    num_layers = len(all_max)
    all_max = torch.cat(all_max).flatten()
    percentile_threshold = torch.quantile(all_max, 99.5 / 100.0).item()
    abs_threshold = all_max.max().item() / 10
    final = max(percentile_threshold, abs_threshold)
    mask = all_max.reshape(num_layers, -1) > final
    mask[int(num_layers * 0.75):, :] = False
    return torch.argwhere(mask)


def signed_table(signed: np.ndarray, dense_first: int = 0, shared: dict[int, float] | None = None):
    """Decoder layers 0..dense_first-1 dense, then MoE layers; signed[moe_row, expert] = largest
    signed output; |output| max is a separate, larger column (a negative outlier can dominate it)."""
    layers = dense_first + signed.shape[0]
    values = np.full((layers, signed.shape[1]), np.nan)
    values[dense_first:] = np.abs(signed) + 0.5
    table = expert_table(values, shared=shared, dense={i: 5.0 for i in range(dense_first)})
    routed = table["kind"] == "routed"
    table.loc[routed, "max_signed_output"] = signed.ravel()
    table.loc[~routed, "max_signed_output"] = 1e4  # never judged by REAP: shared / dense
    return table, layers


@pytest.mark.parametrize("dense_first", [0, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reap_equals_reaps_own_function(seed, dense_first):
    rng = np.random.default_rng(seed)
    signed = rng.lognormal(0, 0.7, size=(12, 32)) * rng.choice([-1, 1], size=(12, 32))
    picks = rng.choice(signed.size, 6, replace=False)
    signed.flat[picks] = rng.uniform(20, 400, 6) * rng.choice([-1, 1], 6)  # outliers of both signs
    signed[0, 0] = 0.0  # a never-routed expert
    table, layers = signed_table(signed, dense_first, shared={dense_first + 1: 900.0})
    observer = {dense_first + r: {"max_activations": torch.tensor(np.maximum(row, 0), dtype=torch.float32)}
                for r, row in enumerate(signed)}  # REAP's running max starts at zeros
    expected = {(dense_first + int(r), int(e)) for r, e in reap_reference(observer)}
    verdict = rules.identify(table, layers, "reap")
    assert set(verdict.experts) == expected
    assert all(isinstance(e, int) for _, e in verdict.experts)  # the shared expert is never a candidate


def test_a_negative_outlier_is_not_a_reap_super_expert():
    signed = background(8, 64, seed=3)
    signed[1, 4], signed[2, 9] = 600.0, -900.0  # 2:9's outlier is negative
    table, layers = signed_table(signed)
    reap = rules.identify(table, layers, "reap")
    assert reap.experts == [(1, 4)]
    assert set(rules.identify(table, layers, "reap-abs").experts) == {(1, 4), (2, 9)}  # |output| sees both
    assert reap.criterion["threshold"] == pytest.approx(max(np.percentile(np.maximum(signed, 0), 99.5), 60.0))


def test_layer_cut_counts_moe_layers_not_decoder_layers():
    # 4 dense layers then 8 MoE layers (4..11): REAP keeps the first int(0.75 * 8) = 6 MoE layers, 4..9;
    # a cut on decoder layers (int(0.75 * 12) = 9) would drop layer 9.
    signed = background(8, 64, seed=5)
    signed[5, 7] = 500.0  # decoder layer 9
    signed[6, 2] = 480.0  # decoder layer 10: past the cut
    table, layers = signed_table(signed, dense_first=4)
    verdict = rules.identify(table, layers, "reap")
    assert verdict.experts == [(9, 7)]
    assert verdict.criterion["layers_judged"] == list(range(4, 10))
    assert rules.identify(table, layers, "reap", include_layers=1.0).experts == [(9, 7), (10, 2)]
    assert rules.identify(table, layers, "reap", include_layers=[10]).experts == [(10, 2)]


def test_reap_needs_the_signed_max_column():
    table = expert_table(background(4, 8))  # a table from before the column existed: NaN
    with pytest.raises(UserError, match="max_signed_output") as e:
        rules.identify(table, 4, "reap")
    assert "\n" not in str(e.value)
