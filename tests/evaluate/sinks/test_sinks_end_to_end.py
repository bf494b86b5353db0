"""`measure_sinks` over several sequences against eager attention probabilities (output_attentions)
and a D_sink computed by hand from paper Eq. 7; the router view, softmax and sigmoid, at the token
where each expert fires, against the router weights and the expert's own output."""

from __future__ import annotations

import contextlib

import pytest
import torch

import families
from ablate_helpers import fused_expert_output, record_block  # tests/ is on sys.path (conftest.py)
from superexperts.capture.data import calibration
from superexperts.evaluate.ablate import ablate
from superexperts.evaluate.sinks.attention import attention_implementation
from superexperts.evaluate.sinks.measure import measure_sinks
from superexperts.evaluate.sinks.router import router_view
from superexperts.models.adapters import map_model
from superexperts.models.demo import DEMO_OUTLIER, DEMO_SUPER_EXPERTS, build_demo


@pytest.fixture(scope="module")
def demo():
    model, tokenizer = build_demo()
    ids = calibration(None, tokenizer, seq_len=20, samples=3, seed=0).input_ids  # 3 different windows
    return model, tokenizer, ids


@torch.no_grad()
def _eager(model, ids, experts=()):
    """(per-layer probabilities (batch, heads, T, T), per-layer max |h|) with `experts` ablated."""
    ablated = ablate(model, list(experts)) if experts else contextlib.nullcontext()
    norm, model.model.norm = model.model.norm, torch.nn.Identity()  # else the last entry is normed
    try:
        with ablated, attention_implementation(model, "eager"):
            out = model(input_ids=ids, output_attentions=True, output_hidden_states=True, use_cache=False)
    finally:
        model.model.norm = norm
    return out.attentions, [float(h.abs().max()) for h in out.hidden_states[1:]]


def test_measure_sinks_over_several_sequences_matches_eager_attention(demo):
    model, _, ids = demo
    ses = list(DEMO_SUPER_EXPERTS)
    result = measure_sinks(model, ids, {"super": ses})
    probs, peaks = _eager(model, ids)
    probs_super, peaks_super = _eager(model, ids, ses)
    heads_mass = torch.stack([p[:, :, 1:, 0].double().mean(dim=(0, 2)) for p in probs])  # (layers, heads)
    torch.testing.assert_close(
        result["original"].head_mass, heads_mass.to(result["original"].head_mass.dtype), atol=1e-5, rtol=1e-4
    )
    assert result["original"].sink_rate() == pytest.approx(float((heads_mass > 0.3).double().mean()))
    assert result["original"].max_hidden == pytest.approx(peaks, rel=1e-5)
    assert result["super"].max_hidden == pytest.approx(peaks_super, rel=1e-5)
    for layer, (p, q) in enumerate(zip(probs, probs_super)):
        before, after = p[:, :, 1:, 0].double(), q[:, :, 1:, 0].double()  # (batch, heads, t > 0)
        kept = before > 0
        ratio = torch.where(kept, after / before, 0.0).sum(dim=(0, 2)) / kept.sum(dim=(0, 2))  # per head
        assert result["super"].d_sink[layer] == pytest.approx(1 - float(ratio.mean()), abs=1e-4)
    assert max(result["super"].d_sink) > 0.8  # the demo's sink does collapse


def test_router_view_reads_where_the_expert_fires(demo):
    model, tokenizer, ids = demo
    comma = tokenizer.convert_tokens_to_ids(",")
    assert (ids == comma).any()
    table = router_view(model, ids, [*DEMO_SUPER_EXPERTS, DEMO_OUTLIER], tokenizer=tokenizer)
    rows = {(r.layer, r.expert): r for r in table.itertuples()}
    for se in DEMO_SUPER_EXPERTS:  # the chain fires at the first token
        assert rows[se].fire_position == 0 and rows[se].fire_score == pytest.approx(
            rows[se].sink_score, rel=0.5
        )
    out = rows[DEMO_OUTLIER]  # the late outlier fires at ',' - not at token 0
    assert (
        out.fire_position > 0 and ids[out.fire_sample, out.fire_position] == comma and out.fire_token == ","
    )
    assert out.fire_score > out.sink_score  # (trained routers: ~2x on the trained demo, 10x+ untrained)


@pytest.mark.parametrize("family", ["deepseek_v3", "qwen3_moe"])  # sigmoid and softmax routers
def test_router_scores_and_fire_token_match_an_independent_computation(family):
    model = families.build(family)
    ids = families.random_ids(samples=2, seq_len=10)
    mm = map_model(model)
    experts = [(1, 0), (2, 3)]
    blocks = {layer: mm.block(layer) for layer, _ in experts}
    with torch.no_grad(), record_block(blocks[1]) as rec1, record_block(blocks[2]) as rec2:
        model(input_ids=ids, use_cache=False)
    records = {1: rec1, 2: rec2}
    table = router_view(model, ids, experts)
    assert set(table["scoring"]) == {"sigmoid" if family == "deepseek_v3" else "softmax"}
    first = torch.zeros(ids.shape, dtype=torch.bool)
    first[:, 0] = True
    first = first.reshape(-1)
    for row in table.itertuples():
        rec, block = records[row.layer], blocks[row.layer]
        logits = rec["x"].double() @ block.router.weight.detach().double().T  # (tokens, experts)
        probs = (logits.sigmoid() if family == "deepseek_v3" else logits.softmax(-1))[:, row.expert]
        assert row.sink_score == pytest.approx(float(probs[first].mean()), rel=1e-5)
        assert row.other_mean == pytest.approx(float(probs[~first].mean()), rel=1e-5)
        assert row.other_max == pytest.approx(float(probs[~first].max()), rel=1e-5)
        routed = (rec["index"] == row.expert).any(-1)
        with torch.no_grad():
            out = fused_expert_output(block.experts, row.expert, rec["x"][routed]).abs().amax(-1)  # (routed,)
        token = int(routed.nonzero()[out.argmax()])
        assert (row.fire_sample, row.fire_position) == divmod(token, ids.shape[1])
        assert row.fire_output == pytest.approx(float(out.max()), rel=1e-5)
        assert row.fire_score == pytest.approx(float(probs[token]), rel=1e-5)
        assert row.fire_selected == 1.0
