"""The demo's causal chain, attention maps, the router view and the no-sink warning."""

from __future__ import annotations

import pytest
import torch

import families
from superexperts.capture.data import calibration
from superexperts.evaluate.ablate.controls import random_controls
from superexperts.evaluate.sinks.chain import layerwise_conditions
from superexperts.evaluate.sinks.maps import MAX_MAP_TOKENS, attention_maps
from superexperts.evaluate.sinks.measure import measure_sinks
from superexperts.evaluate.sinks.router import router_view
from superexperts.evaluate.sinks.study import sink_warnings
from superexperts.models.adapters import map_model
from superexperts.models.demo import DEMO_SUPER_EXPERTS, build_demo
from superexperts.runs.errors import UserError


@pytest.fixture(scope="module")
def demo():
    model, tokenizer = build_demo()
    ids = calibration(None, tokenizer, seq_len=32, samples=1, seed=0).input_ids
    return model, ids


def test_demo_sink_collapses_only_under_super_expert_pruning(demo):
    model, ids = demo
    ses = list(DEMO_SUPER_EXPERTS)
    controls = random_controls(map_model(model), ses, 1, seed=0)
    result = measure_sinks(model, ids, {"super": ses, "random-0": controls[0]})
    original = result["original"]
    assert original.d_sink is None
    assert original.sink_rate() > 0.5
    sink_layers = [i for i, m in enumerate(original.sink_mass) if m > 0.5]
    assert sink_layers and min(sink_layers) > min(layer for layer, _ in ses)  # the sink needs the MA
    for layer in sink_layers:
        assert result["super"].d_sink[layer] > 0.8
        assert result["super"].sink_mass[layer] < 0.3
        assert abs(result["random-0"].d_sink[layer]) < 0.05
    assert result["super"].sink_rate() < original.sink_rate()
    # the massive activation is gone after SE pruning: peaks drop by orders of magnitude
    assert max(result["super"].max_hidden[2:7]) < max(original.max_hidden[2:7]) / 50


def test_layerwise_conditions_one_layer_at_a_time_then_all():
    got = layerwise_conditions([(1, 68), (2, 92), (3, 82), (1, 5)])
    assert got == {"super-layer-1": [(1, 68), (1, 5)], "super-layer-2": [(2, 92)], "super-layer-3": [(3, 82)],
                   "super": [(1, 68), (2, 92), (3, 82), (1, 5)]}
    assert layerwise_conditions([(4, 1)]) == {"super": [(4, 1)]}


def test_router_view_matches_softmax_of_router_logits(demo):
    model, ids = demo
    mm = map_model(model)
    inputs = {}
    handles = [mm.block(layer).block.register_forward_pre_hook(
        lambda m, args, layer=layer: inputs.__setitem__(layer, args[0].reshape(-1, args[0].shape[-1])))
        for layer, _ in DEMO_SUPER_EXPERTS]  # fmt: skip
    with torch.no_grad():
        model(input_ids=ids)
    for h in handles:
        h.remove()
    table = router_view(model, ids, [*DEMO_SUPER_EXPERTS, (1, "shared")])
    assert len(table) == len(DEMO_SUPER_EXPERTS)  # shared experts have no router score
    first = torch.zeros(ids.shape, dtype=torch.bool)
    first[:, 0] = True
    for row in table.itertuples():
        probs = torch.softmax(inputs[row.layer].detach().float() @ mm.block(row.layer).router.weight.detach().float().T, -1)[:, row.expert]
        assert row.sink_score == pytest.approx(float(probs[first.reshape(-1)].mean()), rel=1e-4)
        assert row.other_max == pytest.approx(float(probs[~first.reshape(-1)].max()), rel=1e-4, abs=1e-12)
        assert row.sink_score > 100 * row.other_max  # Appendix F: exceptionally large at the sink only


def test_router_view_uses_sigmoid_for_deepseek_v3():
    model = families.build("deepseek_v3")
    table = router_view(model, families.random_ids(2, 8), [(1, 0), (2, 3)])
    assert set(table["scoring"]) == {"sigmoid"}
    assert ((table["sink_score"] > 0) & (table["sink_score"] < 1)).all()


def test_attention_maps_match_recorded_mass_and_rows_sum_to_one(demo):
    model, ids = demo
    short = ids[:, :12]
    maps = attention_maps(model, short, [3], {"super": list(DEMO_SUPER_EXPERTS)})
    assert list(maps) == ["original", "super"]
    original = maps["original"][3]  # (heads, T, T)
    assert original.shape == (4, 12, 12)
    torch.testing.assert_close(original.sum(-1), torch.ones(4, 12), atol=1e-5, rtol=0)
    assert torch.all(original.triu(1) == 0)  # causal
    assert original[:, 1:, 0].mean() > 0.9 > maps["super"][3][:, 1:, 0].mean()
    with pytest.raises(UserError, match="cap"):
        attention_maps(model, torch.ones(1, MAX_MAP_TOKENS + 1, dtype=torch.long), [3], {})


def test_random_model_without_sink_is_reported_not_crashed():
    model = families.build("qwen3_moe")
    result = measure_sinks(model, families.random_ids(2, 24), {"random": [(1, 2)]})
    warnings = sink_warnings(result)
    assert result["original"].sink_rate() == 0.0
    assert len(warnings) == 1 and "no first-token sink" in warnings[0]


def test_too_short_input_and_bad_sink_keys_are_user_errors(demo):
    model, _ = demo
    with pytest.raises(UserError, match="at least 2 tokens"):
        measure_sinks(model, torch.ones(1, 1, dtype=torch.long))
    with pytest.raises(UserError, match="positions"):
        measure_sinks(model, torch.ones(1, 5, dtype=torch.long), sink_keys=[7])


def test_top_k_sink_keys_pick_the_first_token_on_the_demo(demo):
    model, ids = demo
    result = measure_sinks(model, ids[:, :16], top_k=2)
    assert 0 in result.sink_keys and len(result.sink_keys) == 2
