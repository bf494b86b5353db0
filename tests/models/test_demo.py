"""The demo model shows the paper's chain: planted SEs found, late-layer outlier excluded."""

from __future__ import annotations

import torch

import superexperts
from superexperts.models import demo as demo_mod
from superexperts.models.adapters import map_model


def test_paper_rule_finds_exactly_the_planted_super_experts(demo, demo_calib):
    model, tok = demo
    prof = superexperts.profile(model, demo_calib.input_ids, batch_size=4, tokenizer=tok)
    verdict = superexperts.find_super_experts(prof)
    assert sorted(verdict.experts) == sorted(demo_mod.DEMO_SUPER_EXPERTS)
    # The outlier is large enough to pass both thresholds; only the layer rule excludes it.
    table = prof.expert_stats.set_index(["layer", "expert"])
    outlier = table.loc[demo_mod.DEMO_OUTLIER, "max_abs_output"]
    assert outlier > verdict.criterion["percentile_value"] and outlier > verdict.criterion["max_fraction_value"]
    assert demo_mod.DEMO_OUTLIER[0] not in verdict.criterion["layers_judged"]
    assert demo_mod.DEMO_OUTLIER not in verdict.experts
    all_layers = superexperts.find_super_experts(prof, include_layers=1.0)
    assert demo_mod.DEMO_OUTLIER in all_layers.experts


def test_super_experts_fire_on_the_first_token_into_the_massive_channel(demo, demo_calib):
    model, tok = demo
    prof = superexperts.profile(model, demo_calib.input_ids, tokenizer=tok)
    ses = superexperts.find_super_experts(prof).super_experts
    assert (ses.position == 0).all() and (ses.token_text == tok.bos_token).all()
    assert (ses.channel == demo_mod.DEMO_CHANNEL).all()
    layers = prof.layer_stats.set_index("layer")
    first_se_layer = min(layer for layer, _ in demo_mod.DEMO_SUPER_EXPERTS)
    assert not layers.loc[first_se_layer - 1, "massive"]
    assert layers.loc[first_se_layer:, "massive"].all()
    # The amplification chain: the massive value rises at each SE layer, in the same channel.
    rises = [layers.loc[layer, "top1_abs"] for layer, _ in demo_mod.DEMO_SUPER_EXPERTS]
    assert rises == sorted(rises) and rises[0] > 100
    assert (layers.loc[first_se_layer:, "top1_channel"] == demo_mod.DEMO_CHANNEL).all()


def test_demo_is_deterministic_and_cached(tmp_path):
    a, _ = demo_mod.build_demo()
    b, _ = demo_mod.build_demo()
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    folder = demo_mod.demo_checkpoint(tmp_path / "demo")
    assert (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
    mtime = (folder / "config.json").stat().st_mtime_ns
    assert demo_mod.demo_checkpoint(tmp_path / "demo") == folder
    assert (folder / "config.json").stat().st_mtime_ns == mtime  # not rebuilt
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".demo-")]  # no staging left


def test_adapter_sees_the_demo_layout(demo):
    mm = map_model(demo[0])
    assert mm.num_layers == 8 and len(mm.moe) == 8 and not mm.dense
    assert {b.layout for b in mm.moe} == {"fused"} and mm.moe[0].num_experts == 64


def test_shipped_weights_keep_every_planted_entry_and_train_the_rest(demo):
    from superexperts.models.demo_train import SHIPPED_DTYPE, planted_masks

    trained, tok = demo
    planted, _ = demo_mod.planted_demo()
    masks = planted_masks(planted, tok)
    fixed = changed = free = 0
    for name, p in planted.named_parameters():
        before = p.detach().to(SHIPPED_DTYPE).float()  # what the planting ships as, after the cast
        after = dict(trained.named_parameters())[name].detach()
        mask = masks.get(name, torch.zeros_like(p, dtype=torch.bool))
        assert torch.equal(after[mask], before[mask]), name
        fixed += int(mask.sum())
        changed += int((after[~mask] != before[~mask]).sum())
        free += int((~mask).sum())
    assert fixed > 0 and changed > 0.9 * free  # the planted chain is intact; nearly everything else trained


def test_reserved_channels_are_written_by_planted_weights_only(demo):
    model, tok = demo
    reserved = list(demo_mod.RESERVED_CHANNELS)
    planted = {layer: e for (layer, e) in demo_mod.PLANTED_EXPERTS}
    emb = model.model.embed_tokens.weight
    others = [i for i in range(emb.shape[0]) if i != tok.bos_token_id]
    assert not emb[others][:, demo_mod.DEMO_CHANNEL].any() and not emb[others][:, demo_mod.BOS_CHANNEL].any()
    for i, layer in enumerate(model.model.layers):
        assert not layer.self_attn.o_proj.weight[reserved].any()
        down = layer.mlp.experts.down_proj[:, reserved]  # (E, reserved, I)
        writers = {int(e) for e in down.abs().sum(dim=(1, 2)).nonzero()}
        assert writers <= ({planted[i]} if i in planted else set())
