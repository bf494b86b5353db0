"""Each criterion on hand-made tables, against an independent numpy computation."""

from __future__ import annotations

import re

import numpy as np
import pytest

from expert_tables import background, expert_table
from superexperts.identify import rules
from superexperts.runs.errors import UserError

# Paper Table 1, Qwen3-30B-A3B (C4): 48 layers x 128 experts; SEs L1 E68, L2 E92, L3 E82.
QWEN_LAYERS, QWEN_EXPERTS = 48, 128
QWEN_TOP = {(1, 68): 744.0, (2, 92): 540.0, (3, 82): 430.0, (5, 7): 63.5, (20, 3): 19.1}
QWEN_P995 = 7.3


def qwen_table1():
    """A 6144-expert table with Table 1's top values; the background is scaled so that numpy's
    P99.5 over the judged layers (< round(0.75 * 48) = 36) is 7.3. The percentile's two
    neighbouring order statistics lie in the background, so scaling it scales the percentile."""
    values = background(QWEN_LAYERS, QWEN_EXPERTS, seed=1)
    judged = values[:36].ravel()
    scale = QWEN_P995 / np.percentile(np.concatenate([judged, np.ones(len(QWEN_TOP)) * 1e9]), 99.5)
    values *= scale
    for (layer, expert), a in QWEN_TOP.items():
        values[layer, expert] = a
    return expert_table(values), values


def test_paper_reproduces_table1_for_qwen3_30b_a3b():
    table, values = qwen_table1()
    assert len(table) == 6144
    judged = values[:36].ravel()
    assert judged.size == 4608 and values.max() == 744.0 and np.sort(judged)[-6] < 19.1

    verdict = rules.identify(table, QWEN_LAYERS)

    expected_p = np.percentile(judged, 99.5)  # independent: numpy over layers 0..35
    assert verdict.criterion["percentile_value"] == pytest.approx(expected_p)
    assert round(verdict.criterion["percentile_value"], 1) == QWEN_P995
    assert verdict.criterion["max_fraction_value"] == 744.0 // 10 == 74
    assert round(verdict.criterion["max_value"] / 10, 1) == 74.4  # printed as max/10
    assert verdict.experts == [(1, 68), (2, 92), (3, 82)]
    assert verdict.criterion["layers_judged"] == list(range(36))


def test_paper_floor_division_matters_at_the_boundary():
    values = background(4, 8) * 0.01
    values[0, 0], values[1, 1] = 109.0, 10.95  # max // 10 = 10, max / 10 = 10.9: 10.95 passes both
    values[1, 2] = 10.5  # floor: 10.5 > 10 -> SE; true division: 10.5 < 10.9 -> not
    table = expert_table(values)
    floor = rules.paper(table, 4, percentile=50, include_layers=1.0)
    true = rules.paper(table, 4, percentile=50, include_layers=1.0, floor_division=False)
    assert (1, 2) in floor.experts and (1, 2) not in true.experts
    assert set(true.experts) == {(0, 0), (1, 1)}


def test_shared_experts_are_candidates_and_dense_layers_are_not():
    values = background(4, 8) * 0.01
    values[0] = np.nan  # layer 0 is dense
    table = expert_table(values, shared={1: 50.0, 2: 0.02}, dense={0: 999.0})
    verdict = rules.paper(table, 4, percentile=90, include_layers=1.0)
    assert verdict.experts == [(1, "shared")]
    assert (verdict.candidates["kind"] != "dense").all()


def test_reap_abs_differs_from_paper_when_a_late_layer_holds_the_max():
    # 8 layers: judged layers 0..5; a late-layer outlier (layer 7) of 2000 sets REAP's max/10 = 200,
    # so REAP drops the early candidate of 150 that the paper rule (max over judged layers) keeps.
    values = background(8, 64, seed=3)
    values[1, 4], values[2, 9], values[7, 0] = 600.0, 150.0, 2000.0
    table = expert_table(values)
    paper = rules.identify(table, 8, "paper")
    reap = rules.identify(table, 8, "reap-abs")

    everything = values.ravel()
    judged = values[: int(0.75 * 8)]
    assert reap.criterion["percentile_value"] == pytest.approx(np.percentile(everything, 99.5))
    assert reap.criterion["max_fraction_value"] == pytest.approx(everything.max() / 10)
    threshold = max(np.percentile(everything, 99.5), everything.max() / 10)
    expected = {(int(layer), int(e)) for layer, e in np.argwhere(judged > threshold)}
    assert set(reap.experts) == expected == {(1, 4)}
    assert set(paper.experts) == {(1, 4), (2, 9)}


def test_reap_layer_cut_is_floor_while_paper_rounds():
    assert rules.layer_filter(10, 0.75) == list(range(8))  # round(7.5) = 8
    assert rules.layer_filter(10, 0.75, floor=True) == list(range(7))  # int(7.5) = 7


def test_std_mean_multiple_and_quantile_match_numpy():
    values = background(6, 32, seed=5)
    values[0, 1], values[1, 2], values[2, 3] = 80.0, 40.0, 12.0
    table = expert_table(values)
    judged = values[: round(0.75 * 6)]

    def chosen(mask):
        return {(int(layer), int(e)) for layer, e in np.argwhere(mask)}

    v = rules.identify(table, 6, "std", k=2.0)
    assert set(v.experts) == chosen(judged > judged.mean() + 2.0 * judged.std())
    v = rules.identify(table, 6, "mean-multiple", m=5.0)
    assert set(v.experts) == chosen(judged > 5.0 * judged.mean())
    v = rules.identify(table, 6, "quantile", q=0.99)
    assert set(v.experts) == chosen(judged > np.quantile(judged, 0.99))
    assert v.experts[0] == (0, 1)  # sorted by a desc


def test_include_layers_list_restricts_the_pool():
    values = background(4, 8) * 0.01
    values[0, 0], values[3, 5] = 100.0, 90.0
    verdict = rules.paper(expert_table(values), 4, percentile=50, include_layers=[3])
    assert verdict.experts == [(3, 5)] and verdict.criterion["layers_judged"] == [3]


@pytest.mark.parametrize("params, message", [
    ({"percentile": 100}, "percentile=100 is out of range"),
    ({"percentile": 0}, "percentile=0 is out of range"),
    ({"max_fraction": 0}, "max_fraction=0 is out of range"),
    ({"max_fraction": 1.5}, "max_fraction=1.5 is out of range"),
    ({"include_layers": 1.2}, "must be in (0, 1]"),
    ({"include_layers": [0, 9]}, "out of range"),
    ({"pecentile": 99}, "Did you mean 'percentile'?"),
])  # fmt: skip
def test_out_of_range_parameters_are_one_line_errors(params, message):
    table = expert_table(background(4, 8))
    with pytest.raises(UserError, match=re.escape(message)) as e:
        rules.identify(table, 4, "paper", **params)
    assert "\n" not in str(e.value)


def test_unknown_criterion_suggests_the_close_name():
    with pytest.raises(UserError) as e:
        rules.get_criterion("papr")
    assert str(e.value) == ("Unknown criterion 'papr'. Did you mean 'paper'? "
                            "Available: mean-multiple, paper, quantile, reap, reap-abs, std.")


def test_parse_params_types_values_by_the_criterion_defaults():
    assert rules.parse_params("paper", ["percentile=99", "max-fraction=0.08", "include_layers=1,2",
                                        "floor_division=false"]) == {
        "percentile": 99.0, "max_fraction": 0.08, "include_layers": [1, 2], "floor_division": False}
    assert rules.parse_params("std", ["k=2", "include_layers=0.5"]) == {"k": 2.0, "include_layers": 0.5}
    assert rules.parse_include_layers("3,") == [3]


@pytest.mark.parametrize("pair, message", [
    ("percentil=99", "criterion 'paper' has no parameter 'percentil'. Did you mean 'percentile'?"),
    ("percentile", "write key=value"),
    ("percentile=high", "must be a float"),
    ("floor_division=maybe", "must be true or false"),
    ("include_layers=1;2", "write a fraction like 0.75"),
])  # fmt: skip
def test_parse_params_errors(pair, message):
    with pytest.raises(UserError) as e:
        rules.parse_params("paper", [pair])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_table_without_the_needed_columns_is_rejected():
    table = expert_table(background(2, 4)).drop(columns=["kind"])
    with pytest.raises(UserError, match="lacks columns"):
        rules.paper(table, 2)
