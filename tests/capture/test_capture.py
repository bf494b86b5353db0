"""The one-pass capture against a brute-force recomputation of every expert on its routed tokens."""

from __future__ import annotations

import pytest
import torch

import families
import legacy
from recompute import brute_force, dense_routed_out, fused_expert_out, record_expert_inputs
from superexperts import profile
from superexperts.capture.experts_fn import ACTIVE
from superexperts.models.adapters import map_model


def test_max_abs_output_equals_brute_force(family_model):
    family, model = family_model
    ids = families.random_ids(samples=4, seq_len=12)
    prof = profile(model, ids, batch_size=2)
    expected = brute_force(model, ids, batch_size=2)
    routed = prof.expert_stats[prof.expert_stats.kind == "routed"]
    assert len(routed) == len(expected)
    for r in routed.itertuples():
        out, inp, count = expected[(r.layer, r.expert)]
        assert r.tokens_routed == count, (family, r.layer, r.expert)
        assert r.max_abs_output == pytest.approx(out, rel=1e-5, abs=1e-6), (family, r.layer, r.expert)
        if family != "llama4":  # Llama4's down_proj input is not visible; the expert input is recorded
            assert r.max_abs_input == pytest.approx(inp, rel=1e-5, abs=1e-6), (family, r.layer, r.expert)


def test_token_position_channel_point_at_the_maximum(family_model):
    """The recorded (sample, position, channel) reproduce the recorded value when recomputed."""
    family, model = family_model
    ids = families.random_ids(samples=3, seq_len=10)
    prof = profile(model, ids, batch_size=1)
    mm = map_model(model)
    seen, handles = record_expert_inputs(model)
    with torch.no_grad():
        for batch in ids.split(1):
            model(input_ids=batch, use_cache=False)
    for h in handles:
        h.remove()
    top = prof.expert_stats[prof.expert_stats.kind == "routed"].nlargest(3, "max_abs_output")
    for r in top.itertuples():
        b = mm.block(r.layer)
        x = seen[r.layer][r.sample][0]
        row = x.view(b.num_experts, -1, x.shape[-1])[r.expert, r.position] if b.layout == "dense_routed" \
            else x[r.position]  # fmt: skip
        fn = fused_expert_out if b.layout == "fused" else dense_routed_out
        out = fn(b.experts, r.expert, row[None])[1][0]
        assert out[r.channel].item() == pytest.approx(r.max_output, rel=1e-5), family
        assert r.token_id == ids[r.sample, r.position]


def test_outputs_unchanged_by_profiling(family_model):
    _family, model = family_model
    ids = families.random_ids(samples=2, seq_len=12)
    with torch.no_grad():
        plain = model(ids).logits
        impl = model.config._experts_implementation
    profile(model, ids)
    with torch.no_grad():
        after = model(ids).logits
    # The capturing implementation computes exactly what grouped_mm computes (bit for bit: it weights rows in
    # place only where the product keeps out's dtype).
    from superexperts.capture.session import capture

    with capture(map_model(model)), torch.no_grad():
        during = model(ids).logits
    assert torch.equal(during, plain)
    assert torch.equal(after, plain)
    assert model.config._experts_implementation == impl
    assert not ACTIVE  # no tracker left registered


@pytest.mark.parametrize("family", ["qwen3_moe", "gpt_oss", "deepseek_v3"])
def test_capture_forward_is_grouped_mm_bit_for_bit_in_bfloat16(family):
    """bf16 rows weighted by the router's weights, whatever their dtype: in place only when that is the same
    product, so the logits equal transformers' grouped_mm forward exactly, with and without autograd."""
    from superexperts.capture.experts_fn import fused_implementation

    model = families.build(family, dtype=torch.bfloat16)
    fused = [b.experts for b in map_model(model).moe if b.layout == "fused"]
    model.set_experts_implementation("grouped_mm")
    ids = families.random_ids(samples=2, seq_len=12)
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            plain = model(ids).logits
            with fused_implementation(fused):
                ours = model(ids).logits
        assert torch.equal(ours, plain), (family, grad)


def test_shared_and_dense_units_match_their_modules():
    """Shared experts and dense MLPs: max |down_proj output| = max |module(x)| over all tokens."""
    model = families.build("deepseek_v3")
    ids = families.random_ids(samples=2, seq_len=12)
    mm = map_model(model)
    inputs = {}
    hooks = [b.shared.register_forward_pre_hook(lambda m, a, k=("shared", b.layer): inputs.setdefault(k, []).append(a[0]))
             for b in mm.moe]  # fmt: skip
    hooks += [d.mlp.register_forward_pre_hook(lambda m, a, k=("dense", d.layer): inputs.setdefault(k, []).append(a[0]))
              for d in mm.dense]  # fmt: skip
    prof = profile(model, ids, batch_size=1)
    for h in hooks:
        h.remove()
    table = prof.expert_stats.set_index(["kind", "layer"])
    modules = {("shared", b.layer): b.shared for b in mm.moe} | {("dense", d.layer): d.mlp for d in mm.dense}
    assert {k for k in table.index if k[0] != "routed"} == set(modules)
    with torch.no_grad():
        for key, module in modules.items():
            expected = max(module(x).abs().max().item() for x in inputs[key][-2:])  # profile's 2 batches
            assert table.loc[key, "max_abs_output"] == pytest.approx(expected, rel=1e-5)
            assert table.loc[key, "tokens_routed"] == ids.numel()


def test_legacy_modulelist_experts_match_fused():
    """The hook-based ModuleList path and the fused experts path measure the same a[l,e] and tokens."""
    fused = families.build("mixtral")
    ids = families.random_ids(samples=3, seq_len=12)
    with torch.no_grad():
        ref = fused(ids).logits
    prof_fused = profile(fused, ids, batch_size=1)
    old = legacy.legacy_mixtral(fused)  # same weights, 4.x structure
    assert map_model(old).moe[0].layout == "modulelist"
    with torch.no_grad():
        torch.testing.assert_close(old(ids).logits, ref, rtol=1e-4, atol=1e-5)
    prof_old = profile(old, ids, batch_size=1)
    a, b = prof_fused.expert_stats, prof_old.expert_stats
    assert (a.tokens_routed.to_numpy() == b.tokens_routed.to_numpy()).all()
    assert a.max_abs_output.to_numpy() == pytest.approx(b.max_abs_output.to_numpy(), rel=1e-4)
    assert (a.position.to_numpy() == b.position.to_numpy()).all()
    assert (a.channel.to_numpy() == b.channel.to_numpy()).all()


def test_nonfinite_outputs_are_reported_not_hidden():
    model = families.build("qwen3_moe")
    experts = map_model(model).moe[0].experts
    with torch.no_grad():
        experts.down_proj[3].fill_(float("nan"))
    prof = profile(model, families.random_ids(samples=2, seq_len=12))
    row = prof.expert_stats[(prof.expert_stats.layer == 0) & (prof.expert_stats.expert == 3)].iloc[0]
    assert row.nonfinite_rows == row.tokens_routed > 0
    assert prof.layer_stats.nonfinite.sum() > 0


def test_a_failure_inside_transformers_is_one_line_ours_keeps_its_traceback():
    from superexperts.runs.errors import UserError

    model = families.build("qwen3_moe")
    ids = families.random_ids(samples=2, seq_len=8)
    model.model.rotary_emb.inv_freq = None  # transformers' rotary forward now fails inside its own code
    with pytest.raises(UserError, match=r"qwen3_moe: the model's own forward fails in transformers .*modeling_qwen3_moe.py"):
        profile(model, ids)
    model = families.build("qwen3_moe")

    def ours(module, args, output):
        raise ValueError("a bug of ours")

    model.model.layers[1].register_forward_hook(ours)
    with pytest.raises(ValueError, match="a bug of ours"):
        profile(model, ids)
