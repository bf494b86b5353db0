"""The one-pass pruning criteria (REAP saliency, EAN, signed max) against an explicit per-expert loop."""

from __future__ import annotations

import math

import pytest
import torch

import families
import legacy
from recompute import dense_routed_out, fused_expert_out, recorded_inputs
from superexperts import profile
from superexperts.models.adapters import map_model

FAMILIES = ["qwen3_moe", "qwen2_moe", "mixtral", "deepseek_v3", "gpt_oss", "olmoe", "llama4"]


def loop_criteria(model, ids: torch.Tensor, batch_size: int) -> dict[tuple[int, int], dict[str, float]]:
    """{(layer, expert): ean, reap, signed max, tokens}: each expert recomputed on its routed rows,
    weighted by the routing weight the router gave the experts module (its forward arguments)."""
    mm = map_model(model)
    seen = recorded_inputs(model, ids, batch_size)
    result = {}
    for b in mm.moe:
        for e in range(b.num_experts):
            ean, weighted, signed, count = 0.0, 0.0, -math.inf, 0
            for args in seen[b.layer]:
                if b.layout == "fused":
                    x, index, weights = args
                    hit = index == e  # (tokens, top_k): at most one True per token
                    rows = hit.any(-1)
                    w = (weights * hit).sum(-1)[rows]
                    out = fused_expert_out(b.experts, e, x[rows])[1]
                else:  # Llama4: score folded into the input, no weight on the output
                    x = args[0].view(b.num_experts, -1, args[0].shape[-1])[e]
                    rows = x.abs().amax(-1) > 0
                    w = torch.full((int(rows.sum()),), math.nan)
                    out = dense_routed_out(b.experts, e, x[rows])[1]
                for r in range(out.shape[0]):  # one routed token at a time
                    norm = torch.linalg.vector_norm(out[r].double()).item()
                    ean += norm
                    weighted += float(w[r]) * norm
                    signed = max(signed, out[r].max().item())
                count += out.shape[0]
            reap = weighted / count if count else 0.0
            result[(b.layer, e)] = {"ean": ean, "reap": reap, "signed": signed if count else 0.0, "tokens": count}
    return result


@pytest.mark.parametrize("family", FAMILIES)
def test_reap_saliency_and_ean_equal_a_per_expert_loop(family):
    model = families.build(family)
    ids = families.random_ids(samples=4, seq_len=12, seed=1)
    table = profile(model, ids, batch_size=2).expert_stats
    expected = loop_criteria(model, ids, batch_size=2)
    routed = table[table.kind == "routed"]
    assert len(routed) == len(expected)
    for r in routed.itertuples():
        want = expected[(r.layer, r.expert)]
        where = (family, r.layer, r.expert)
        assert r.tokens_routed == want["tokens"], where
        assert r.ean == pytest.approx(want["ean"], rel=1e-4, abs=1e-6), where
        assert r.max_signed_output == pytest.approx(want["signed"], rel=1e-4, abs=1e-6), where
        if family == "llama4" and r.tokens_routed:
            assert math.isnan(r.reap_saliency), where  # no output-side weight exists
        else:
            assert r.reap_saliency == pytest.approx(want["reap"], rel=1e-4, abs=1e-6), where
    assert (routed.tokens_routed > 0).any() and (routed.ean > 0).any()


def test_signed_max_is_not_the_absolute_max():
    """An expert whose largest |output| is negative: max_signed_output is the largest signed value."""
    model = families.build("qwen3_moe")
    table = profile(model, families.random_ids(samples=4, seq_len=12)).expert_stats
    routed = table[(table.kind == "routed") & (table.tokens_routed > 0)]
    negative = routed[routed.max_output < 0]
    assert len(negative)  # random weights give both signs
    assert (negative.max_signed_output < negative.max_abs_output).all()
    assert (routed.max_signed_output <= routed.max_abs_output + 1e-6).all()


def test_shared_and_dense_rows_have_no_reap_saliency():
    table = profile(families.build("deepseek_v3"), families.random_ids(samples=2, seq_len=12)).expert_stats
    other = table[table.kind != "routed"]
    assert len(other) and other.reap_saliency.isna().all()
    assert (other.ean > 0).all()


def test_legacy_modulelist_router_weights_match_fused():
    """ModuleList blocks: the weights replayed from the router's logits give the fused path's numbers."""
    fused = families.build("mixtral")
    ids = families.random_ids(samples=3, seq_len=12)
    a = profile(fused, ids, batch_size=1).expert_stats
    b = profile(legacy.legacy_mixtral(fused), ids, batch_size=1).expert_stats
    assert map_model(fused).moe[0].layout == "modulelist"
    for column in ("reap_saliency", "ean", "max_signed_output"):
        assert b[column].to_numpy() == pytest.approx(a[column].to_numpy(), rel=1e-4, abs=1e-6), column
    assert not a.reap_saliency.isna().any()


def test_nan_saliency_survives_the_run_folder(tmp_path):
    """Shared experts' NaN is saved as "nan" in profile.json and read back as a float column."""
    from superexperts.identify.profile_run import load_profile, save_run
    from superexperts.identify.rules import identify

    prof = profile(families.build("deepseek_v3"), families.random_ids(samples=2, seq_len=12))
    save_run(tmp_path, prof, identify(prof.expert_stats, prof.num_layers, "paper"))
    loaded = load_profile(tmp_path).expert_stats
    for column in ("reap_saliency", "ean", "max_signed_output"):
        assert loaded[column].to_numpy() == pytest.approx(prof.expert_stats[column].to_numpy(), nan_ok=True)
    loaded.to_parquet(tmp_path / "again.parquet")  # a float column, not strings mixed with floats
