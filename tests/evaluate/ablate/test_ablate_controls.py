"""Random controls: same count as the SEs, never an SE, layer-controlled stays in the SEs' layers."""

from __future__ import annotations

import pytest

from superexperts.evaluate.ablate.controls import random_controls
from superexperts.runs.errors import UserError

LAYERS = {0: 8, 1: 8, 2: 8, 3: 8}
SES = [(1, 3), (1, 5), (2, 0), (2, "shared")]


@pytest.mark.parametrize("layer_controlled", [False, True])
def test_controls_never_include_an_se(layer_controlled):
    # at most as many sets per call as are disjoint (3 layer-controlled: layer 1 has 6 non-SEs for 2 SEs)
    per_call = 3 if layer_controlled else 7
    controls = [c for s in range(100) for c in random_controls(LAYERS, SES, per_call, seed=s * per_call,
                                                                layer_controlled=layer_controlled)]  # fmt: skip
    assert len(controls) == 100 * per_call
    seen = set()
    for chosen in controls:
        assert len(chosen) == len(SES) == len(set(chosen))
        assert not set(chosen) & set(SES)
        assert all(isinstance(e, int) and 0 <= e < LAYERS[layer] for layer, e in chosen)
        if layer_controlled:  # same count per layer as the SEs
            assert sorted(layer for layer, _ in chosen) == sorted(layer for layer, _ in SES)
        seen.update(chosen)
    # Over many seeds every non-SE candidate of the pool gets drawn: the draw is not stuck.
    pool_layers = {1, 2} if layer_controlled else set(LAYERS)
    pool = {(layer, e) for layer in pool_layers for e in range(LAYERS[layer])} - set(SES)
    assert seen == pool


def test_controls_are_seeded_and_differ_by_seed():
    a = random_controls(LAYERS, SES, 5, seed=7)
    assert a == random_controls(LAYERS, SES, 5, seed=7)
    assert len({tuple(c) for c in a}) > 1
    assert random_controls(LAYERS, SES, 3, seed=8)[0] == a[1]


def test_controls_bad_input():
    with pytest.raises(UserError, match="only 5 exist"):
        random_controls({1: 8}, [(1, e) for e in range(3)] + [(1, "shared")] * 3, 1, layer_controlled=True)
    with pytest.raises(UserError, match="no routed experts"):
        random_controls(LAYERS, [(7, 1)], 1)
    with pytest.raises(UserError, match="at least one SE"):
        random_controls(LAYERS, [], 1)


def test_more_controls_than_disjoint_sets_are_refused_with_that_number():
    layers, ses = {1: 8, 2: 8, 3: 8}, [(1, 0), (1, 1), (2, 0)]
    # pooled: 24 - 3 = 21 non-SEs, 3 per set -> 7; layer by layer: layer 1 has 6 non-SEs for 2 SEs -> 3
    assert len(random_controls(layers, ses, 7)) == 7
    assert len(random_controls(layers, ses, 3, layer_controlled=True)) == 3
    with pytest.raises(UserError, match="--random 8 is more than the 7 disjoint control sets"):
        random_controls(layers, ses, 8)
    with pytest.raises(UserError, match="--random 4 is more than the 3 disjoint control sets"):
        random_controls(layers, ses, 4, layer_controlled=True)
    with pytest.raises(UserError, match="pass --random 7 or fewer"):  # at once, not after 10^20 draws
        random_controls(layers, ses, 10**20)


def test_the_limit_from_config_numbers_bounds_the_exact_one():
    from superexperts.evaluate.ablate.controls import check_controls_fit, disjoint_control_limit

    ses = [(1, 0), (1, 1), (2, 0)]
    # every layer an MoE layer: the same numbers random_controls refuses past
    assert disjoint_control_limit(3, 8, ses, layer_controlled=False) == 7
    assert disjoint_control_limit(3, 8, ses, layer_controlled=True) == 3
    # a dense layer 0 the config numbers cannot see: an upper bound (8 + 21 = 29 experts -> 9 sets), never less
    assert disjoint_control_limit(4, 8, ses, layer_controlled=False) == 9
    assert disjoint_control_limit(3, 8, [(5, 0)], layer_controlled=False) is None  # the experts check says why
    config = {"text_config": {"num_hidden_layers": 3, "num_experts": 8}}  # config.json as a dict, or an object
    check_controls_fit(config, ses, 7, layer_controlled=False)
    with pytest.raises(UserError, match="--random 4 is more than the 3 disjoint control sets .* in the SEs' layers"):
        check_controls_fit(config, ses, 4, layer_controlled=True)
    with pytest.raises(UserError, match="pass --random 7 or fewer"):
        check_controls_fit(type("Config", (), {"num_hidden_layers": 3, "num_local_experts": 8})(), ses, 10**20,
                           layer_controlled=False)  # fmt: skip
