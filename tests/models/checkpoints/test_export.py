"""A pruned export loads with transformers and equals the in-memory zero ablation."""

from __future__ import annotations

import errno
import json
import os
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM

import families
from superexperts.evaluate.ablate import ablate
from superexperts.models.checkpoints.export import export_pruned
from superexperts.runs.errors import UserError

IDS = families.random_ids(samples=2, seq_len=12)
CASES = {  # family -> experts pruned (routed and shared, several per layer)
    "qwen3_moe": [(1, 3), (1, 5), (2, 0)],
    "mixtral": [(0, 7), (2, 1)],
    "deepseek_v3": [(1, 2), (2, "shared")],
    "gpt_oss": [(0, 4), (3, 6)],
    "qwen2_moe": [(0, "shared"), (3, 7)],
}


@pytest.mark.parametrize(("family", "layout"), [(f, "hub") for f in CASES] + [("qwen3_moe", "fused")])
def test_export_equals_zero_ablation(checkpoints, tmp_path, family, layout):
    model, folder = checkpoints(family, layout)
    experts = CASES[family]
    export_pruned(folder, experts, tmp_path / "out")
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32).eval()
    with ablate(model, experts, mode="zero"), torch.no_grad():
        expected_state = {k: v.clone() for k, v in model.state_dict().items()}
        expected_logits = model(IDS).logits
    state = exported.state_dict()
    assert sorted(state) == sorted(expected_state)
    changed = [k for k in state if not torch.equal(state[k], model.state_dict()[k])]
    for k, v in expected_state.items():
        assert torch.equal(state[k], v), k
    assert changed and all("down_proj" in k for k in changed)  # only down projections were touched
    with torch.no_grad():
        assert torch.equal(exported(IDS).logits, expected_logits)
    # everything but the weights is copied byte for byte
    for path in folder.iterdir():
        if path.suffix != ".safetensors":
            assert (tmp_path / "out" / path.name).read_bytes() == path.read_bytes()
    record = json.loads((tmp_path / "out" / "superexperts_export.json").read_text())
    assert record["mode"] == "zero" and len(record["experts"]) == len(experts)


def test_sharded_export_keeps_the_index(checkpoints, tmp_path):
    model, folder = checkpoints("olmoe", "sharded")
    export_pruned(folder, [(1, 2)], tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [p.name for p in folder.iterdir()] + ["superexperts_export.json"])  # fmt: skip
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32)
    expected = model.model.layers[1].mlp.experts.down_proj.detach().clone()
    expected[2] = 0  # the slice by hand, independent of the ablation code
    assert torch.equal(exported.model.layers[1].mlp.experts.down_proj, expected)


def test_bad_input_writes_nothing(checkpoints, tmp_path):
    _, folder = checkpoints("qwen3_moe", "hub")
    with pytest.raises(UserError, match="out of range"):
        export_pruned(folder, [(1, 99)], tmp_path / "out")
    with pytest.raises(UserError, match="no routed experts|no shared expert"):
        export_pruned(folder, [(1, "shared")], tmp_path / "out")
    with pytest.raises(UserError, match="mean/skip"):
        export_pruned(folder, [(1, 1)], tmp_path / "out", mode="mean")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep")
    with pytest.raises(UserError, match="not empty"):
        export_pruned(folder, [(1, 1)], tmp_path / "full")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]


def test_disk_full_leaves_nothing(checkpoints, tmp_path, monkeypatch):
    _, folder = checkpoints("qwen3_moe", "hub")
    from superexperts.models.checkpoints import export

    def full_disk(path, ranges, chunk=0):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(export, "_zero", full_disk)
    with pytest.raises(UserError, match="disk is full"):
        export_pruned(folder, [(1, 1)], tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_missing_shard_fails_before_writing(checkpoints, tmp_path):
    _, folder = checkpoints("olmoe", "sharded")
    broken = shutil.copytree(folder, tmp_path / "broken")
    min(broken.glob("*.safetensors")).unlink()
    with pytest.raises(UserError, match="missing shard"):
        export_pruned(broken, [(1, 1)], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_export_super_from_run(checkpoints, tmp_path, capsys):
    from superexperts.cli import main

    _, folder = checkpoints("qwen3_moe", "hub")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "super_experts.json").write_text(json.dumps(
        {"criterion": {}, "super_experts": [{"layer": 1, "expert": 4}, {"layer": 2, "expert": 6}]}))  # fmt: skip
    assert main(["export", str(folder), "--experts", "super", "--from", str(run_dir), "--out", str(tmp_path / "o")]) == 0
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "o")
    assert torch.count_nonzero(exported.model.layers[1].mlp.experts.down_proj[4]) == 0
    assert torch.count_nonzero(exported.model.layers[2].mlp.experts.down_proj[6]) == 0
    assert "pruned 1:4,2:6" in capsys.readouterr().out
    assert main(["export", str(folder), "--experts", "super", "--out", str(tmp_path / "p")]) == 2
    assert "needs --from" in capsys.readouterr().err
