"""`superexperts profile` end to end on the demo checkpoint folder, and its bad-input paths."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import transformers as tf

from superexperts.cli import main
from superexperts.models.demo import DEMO_SUPER_EXPERTS


def test_profile_writes_a_complete_run(demo_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["profile", str(demo_dir), "--seq-len", "64", "--samples", "8", "--batch-size", "4",
                 "--device", "cpu", "--out", str(out), "--no-report"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "2 Super Experts" in printed
    assert "inside L1/13: 1 of 32 atoms carry 90% of its output at channel 37: atom 0" in printed
    ses = json.loads((out / "super_experts.json").read_text())
    for s in ses["super_experts"]:  # the demo plants neuron 0 of each SE (models/demo.py)
        assert s["super_atoms"][0]["atom"] == 0 and s["super_atoms"][0]["share"] >= 0.9
    assert sorted((s["layer"], s["expert"]) for s in ses["super_experts"]) == sorted(DEMO_SUPER_EXPERTS)
    values = [s["max_abs_output"] for s in ses["super_experts"]]
    assert values == sorted(values, reverse=True)
    assert ses["criterion"]["name"] == "paper" and "percentile_value" in ses["criterion"]
    prof = json.loads((out / "profile.json").read_text())
    meta = prof["meta"]
    assert meta["data"]["samples"] == 8 and len(meta["data"]["sha256"]) == 64
    assert meta["versions"]["torch"] and meta["seed"] == 0 and meta["device"] == "cpu"
    atoms = pd.read_parquet(out / "atom_stats.parquet")
    assert len(atoms) == 8 * 64 * 32  # demo: every atom of 8 MoE layers x 64 experts x 32 units
    table = pd.read_parquet(out / "expert_stats.parquet")
    assert len(table) == len(prof["expert_stats"]) == len(pd.read_csv(out / "expert_stats.csv"))
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_refuses_to_mix_runs_without_overwrite(demo_dir, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["profile", str(demo_dir), "--seq-len", "32", "--samples", "2", "--out", str(out), "--no-report"]
    assert main(args) == 0
    before = (out / "profile.json").read_bytes()
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "profile.json").read_bytes() == before
    assert main([*args, "--overwrite", "--seed", "1"]) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seq-len", "1"], "--seq-len must be >= 2"),
        (["--samples", "0"], "--samples must be >= 1"),
        (["--batch-size", "0"], "--batch-size must be 'auto' or a whole number >= 1"),
        (["--batch-size", "lots"], "--batch-size must be 'auto' or a whole number >= 1, got 'lots'"),
        (["--dtype", "int8"], "--dtype 'int8' unknown"),
        (["--device", "banana"], "not a device"),
        (["--criterion", "papr"], "Did you mean 'paper'"),
        (["--data", "./nope.txt"], "no such file"),
    ],
)
def test_bad_arguments_fail_in_one_line_without_output(demo_dir, tmp_path, capsys, args, message):
    out = tmp_path / "run"
    assert main(["profile", str(demo_dir), "--out", str(out), "--no-report", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (out / "profile.json").exists()


def test_bad_models(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["profile", str(tmp_path / "empty"), "--out", str(tmp_path / "r")]) == 2
    assert "not a checkpoint folder" in capsys.readouterr().err
    dense = tf.Qwen3ForCausalLM(tf.Qwen3Config(vocab_size=64, hidden_size=16, intermediate_size=32,
                                              num_hidden_layers=1, num_attention_heads=2,
                                              num_key_value_heads=1, head_dim=8))  # fmt: skip
    dense.save_pretrained(tmp_path / "dense")
    assert main(["profile", str(tmp_path / "dense"), "--out", str(tmp_path / "r")]) == 2
    assert "not a Mixture-of-Experts model" in capsys.readouterr().err
    assert main(["profile", "no-such-org/no-such-model", "--out", str(tmp_path / "r")]) == 2
    assert "pass a local checkpoint folder" in capsys.readouterr().err
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_missing_tokenizer(demo_dir, tmp_path, capsys):
    import shutil

    folder = tmp_path / "notok"
    shutil.copytree(demo_dir, folder)
    for f in folder.glob("tokenizer*"):
        f.unlink()
    (folder / "special_tokens_map.json").unlink(missing_ok=True)
    assert main(["profile", str(folder), "--out", str(tmp_path / "r")]) == 2
    assert "tokenizer" in capsys.readouterr().err


def test_no_atoms_skips_the_atom_table_and_says_so(demo_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["profile", str(demo_dir), "--seq-len", "64", "--samples", "4", "--device", "cpu", "--out", str(out),
                 "--no-atoms"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "2 Super Experts" in printed and "inside L1/13" not in printed
    assert "atom statistics skipped (--no-atoms)" in printed
    assert json.loads((out / "profile.json").read_text())["meta"]["atoms"] is False
    assert not (out / "atom_stats.parquet").exists()
    assert all("super_atoms" not in s for s in json.loads((out / "super_experts.json").read_text())["super_experts"])
    assert "This run was profiled with --no-atoms" in (out / "report.html").read_text()
    # what needs the super atoms says how to get them
    assert main(["prune-eval", "--from", str(out), "--atoms", "super", "--device", "cpu"]) == 2
    assert "re-run `superexperts profile` without --no-atoms" in capsys.readouterr().err
