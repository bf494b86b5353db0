"""A run names its model by absolute path and fingerprint: a moved working folder cannot change which
model `--from` evaluates, and other weights under the same name are refused (issue 23)."""

from __future__ import annotations

import json
import os

from catalogue_workspace import PROFILE_ARGS

import families
from superexperts.cli import main

PRUNE = ["--experts", "1:3", "--ppl", "../a/text.txt", "--seq-len", "16", "--device", "cpu"]


def _checkpoint(folder, seed):
    families.build("qwen3_moe", seed=seed).save_pretrained(folder)
    families.char_tokenizer().save_pretrained(folder)


def test_from_follows_the_run_not_the_working_folder(tmp_path, monkeypatch, capfd):
    a, b = tmp_path / "a", tmp_path / "b"
    _checkpoint(a / "models" / "q", seed=0)
    _checkpoint(b / "models" / "q", seed=1)  # the same relative name, other weights
    (a / "text.txt").write_text("The quick brown fox jumps over the lazy dog. " * 20)
    monkeypatch.chdir(a)
    assert main(["profile", "models/q", "--out", "runs/q", *PROFILE_ARGS]) == 0
    meta = json.loads((a / "runs" / "q" / "profile.json").read_text())["meta"]
    assert meta["model_path"] == str(a / "models" / "q")  # absolute, not "models/q"
    assert set(meta["fingerprint"]) == {"config", "weights"}

    monkeypatch.chdir(b)
    capfd.readouterr()
    assert main(["prune-eval", "--from", "../a/runs/q", *PRUNE, "--out", "pe"]) == 0
    evaluated = json.loads((b / "pe" / "prune_eval.json").read_text())
    assert json.dumps(evaluated).count(str(a / "models" / "q")) >= 1  # a's model, found from b
    assert str(b / "models" / "q") not in json.dumps(evaluated)

    capfd.readouterr()
    assert main(["prune-eval", "models/q", "--from", "../a/runs/q", *PRUNE, "--out", "pe2"]) == 2
    err = capfd.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "weights fingerprint" in err, err
    assert str(a / "models" / "q") in err and "models/q has weights fingerprint" in err, err
    assert not os.path.exists(b / "pe2")
