"""Super atoms on planted checkpoints, and the atom criteria on hand-built tables."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import families
import superexperts
from superexperts.identify.atoms import camera_scores, super_atoms
from superexperts.identify.profile_run import load_profile, save_run
from superexperts.identify.rules import paper
from superexperts.runs.errors import UserError

PLANTED = 5  # the planted neuron: not neuron 0, so a result that always says 0 fails
READ, WRITE, TOKEN = 3, 17, 5  # hidden channel the neuron reads, channel it writes, token that carries READ


def _plant_token(model) -> None:
    """Token TOKEN's embedding is channel READ alone; no other token carries READ."""
    emb = model.get_input_embeddings().weight
    emb[:, READ] = 0.0
    emb[TOKEN] = 0.0
    emb[TOKEN, READ] = 30.0  # large: it still dominates after earlier layers add their outputs


@torch.no_grad()
def plant_routed(family: str, layer: int, expert: int, gain: float = 40.0):
    """Expert `expert` of `layer` receives TOKEN and its neuron PLANTED writes gain x a into WRITE.
    The gate/up rows of the neuron are placed by layout: halves (rows k, I+k of [2I, H]) or
    GPT-OSS's interleaved columns (2k, 2k+1 of the transposed [H, 2I]); down_proj column k or row k."""
    model = families.build(family)
    _plant_token(model)
    block = model.model.layers[layer].mlp
    router = block.router if hasattr(block, "router") else block.gate
    router.weight[expert, READ] = 10.0
    experts = block.experts
    if experts.is_transposed:  # GPT-OSS: gate_up_proj [E, H, 2I], down_proj [E, I, H]
        experts.gate_up_proj[expert, READ, 2 * PLANTED] = 1.5  # gate column 2k
        experts.gate_up_proj[expert, READ, 2 * PLANTED + 1] = 1.5  # up column 2k + 1
        experts.down_proj[expert, PLANTED, WRITE] = gain
    else:  # gate_up_proj [E, 2I, H], down_proj [E, H, I]
        inter = experts.down_proj.shape[-1]
        experts.gate_up_proj[expert, PLANTED, READ] = 1.5  # gate row k
        experts.gate_up_proj[expert, inter + PLANTED, READ] = 1.5  # up row I + k
        experts.down_proj[expert, WRITE, PLANTED] = gain
    return model


@torch.no_grad()
def plant_shared(family: str, layer: int, gain: float = 40.0):
    """The shared expert of `layer` (a plain MLP) gets the planted neuron."""
    model = families.build(family)
    _plant_token(model)
    shared = model.model.layers[layer].mlp.shared_experts
    shared.gate_proj.weight[PLANTED, READ] = 1.5
    shared.up_proj.weight[PLANTED, READ] = 1.5
    shared.down_proj.weight[WRITE, PLANTED] = gain
    return model


def held_out_ids() -> torch.Tensor:
    ids = families.random_ids(samples=3, seq_len=12, seed=7)
    ids[ids == TOKEN] = TOKEN + 1
    ids[:, 0] = TOKEN  # the planted token opens every window, like BOS
    return ids


def saved_super_experts(model, tmp_path) -> list[dict]:
    prof = superexperts.profile(model, held_out_ids(), batch_size=1)
    save_run(tmp_path, prof, paper(prof.expert_stats, prof.num_layers))
    return json.loads((tmp_path / "super_experts.json").read_text())["super_experts"]


@pytest.mark.parametrize("family, layer, expert", [("qwen3_moe", 0, 6), ("gpt_oss", 1, 3), ("deepseek_v3", 1, 2)])
def test_planted_routed_neuron_is_the_first_super_atom(family, layer, expert, tmp_path):
    ses = saved_super_experts(plant_routed(family, layer, expert), tmp_path)
    entry = next(s for s in ses if (s["layer"], s["expert"]) == (layer, expert))
    assert entry["channel"] == WRITE
    assert entry["super_atoms"][0]["atom"] == PLANTED
    assert entry["super_atoms"][0]["share"] >= 0.9
    assert len(entry["super_atoms"]) == 1


def test_planted_shared_expert_neuron_is_the_first_super_atom(tmp_path):
    ses = saved_super_experts(plant_shared("deepseek_v3", 2), tmp_path)
    entry = next(s for s in ses if (s["layer"], s["expert"]) == (2, "shared"))
    assert entry["super_atoms"][0]["atom"] == PLANTED and entry["super_atoms"][0]["share"] >= 0.9


def test_atom_table_survives_the_run_folder(tmp_path):
    prof = superexperts.profile(plant_routed("qwen3_moe", 0, 6), held_out_ids(), batch_size=2)
    save_run(tmp_path, prof, paper(prof.expert_stats, prof.num_layers))
    loaded = load_profile(tmp_path)
    pd.testing.assert_frame_equal(loaded.atom_stats, prof.atom_stats)


def test_runs_without_atoms_still_load(tmp_path):
    prof = superexperts.profile(families.build("qwen3_moe"), held_out_ids(), atoms=False)
    save_run(tmp_path, prof, paper(prof.expert_stats, prof.num_layers))
    assert not (tmp_path / "atom_stats.parquet").exists()
    assert load_profile(tmp_path).atom_stats.empty
    assert all("super_atoms" not in s for s in json.loads((tmp_path / "super_experts.json").read_text())["super_experts"])


def test_damaged_atom_table_is_refused(tmp_path):
    prof = superexperts.profile(families.build("qwen3_moe"), held_out_ids())
    save_run(tmp_path, prof, paper(prof.expert_stats, prof.num_layers))
    (tmp_path / "atom_stats.parquet").write_bytes(b"not parquet")
    with pytest.raises(UserError, match="atom_stats.parquet is unreadable"):
        load_profile(tmp_path)


@pytest.mark.parametrize("contributions, expected", [
    ([0.1, 9.0, -0.2, 0.5], [1]),  # one atom carries 9 / 9.4
    ([1.0, 1.0, 1.0, 1.0], [0, 1, 2, 3]),  # four equal atoms: all four are needed for 90%
    ([5.0, -4.0, 4.5, 0.5], [0, 2]),  # 5 + 4.5 = 9.5 >= 0.9 x 6: the negative atom is never picked
    ([-3.0, -0.1, 0.05], [0]),  # a negative output: shares are relative to it
    ([0.0, 0.0], []),  # nothing written, no super atoms
])  # fmt: skip
def test_super_atoms_take_the_fewest_largest_shares(contributions, expected):
    picked = super_atoms(np.array(contributions))
    assert [p["atom"] for p in picked] == expected
    total = sum(contributions)
    for p in picked:
        assert p["share"] == pytest.approx(contributions[p["atom"]] / total, abs=1e-6)
    if picked:
        assert sum(p["share"] for p in picked) >= 0.9
        assert sum(p["share"] for p in picked[:-1]) < 0.9  # one fewer would not do


def test_camera_scores_mix_and_rank_per_layer():
    table = pd.DataFrame({
        "layer": [1, 1, 1, 2, 2], "expert": [0, 0, -1, 3, 3], "kind": ["routed", "routed", "shared", "routed", "routed"],
        "atom": [0, 1, 0, 0, 1], "camera_sum": [10.0, 1.0, 4.0, 2.0, 8.0], "camera_max": [1.0, 5.0, 4.0, 2.0, 0.0],
    })  # fmt: skip
    scores = camera_scores(table, rho=0.9)
    by_key = scores.set_index(["layer", "kind", "expert", "atom"])
    assert by_key.loc[(1, "routed", 0, 0), "camera"] == pytest.approx(0.1 * 10 + 0.9 * 1)  # 1.9
    assert by_key.loc[(1, "routed", 0, 1), "camera"] == pytest.approx(0.1 * 1 + 0.9 * 5)  # 4.6
    assert by_key.loc[(1, "shared", -1, 0), "camera"] == pytest.approx(4.0)
    # per layer, highest first: layer 1 ranks 4.6 > 4.0 > 1.9; layer 2 ranks 2.0 > 0.8 on its own
    assert by_key.loc[(1, "routed", 0, 1), "rank"] == 1 and by_key.loc[(1, "routed", 0, 0), "rank"] == 3
    assert by_key.loc[(2, "routed", 3, 0), "rank"] == 1 and by_key.loc[(2, "routed", 3, 1), "rank"] == 2
    assert camera_scores(table, rho=1.0).set_index(["layer", "kind", "expert", "atom"]).camera.tolist() \
        == [5.0, 4.0, 1.0, 2.0, 0.0]  # fmt: skip
    with pytest.raises(UserError, match="rho"):
        camera_scores(table, rho=1.5)
