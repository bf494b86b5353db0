"""The demo's SEs are data-agnostic and survive post-training (paper Sec. 3), measured with `compare`.

Profiles are made by the CLI on two calibration domains (the built-in prose; the addition lines) and
on a copy fine-tuned with every weight trainable; `compare` must find the same SE set each time.
"""

from __future__ import annotations

import json

import pytest
import torch

from superexperts.cli import main
from superexperts.models import demo as demo_mod
from superexperts.models.demo_train import FINETUNE, finetune_demo, planted_masks


@pytest.fixture(scope="module")
def prose_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("prose")
    assert main(["profile", "--device", "cpu", "--out", str(out), "--overwrite"]) == 0
    return out


def _compare(tmp_path, *runs) -> dict:
    out = tmp_path / "compare"
    assert main(["compare", *map(str, runs), "--out", str(out)]) == 0
    return json.loads((out / "compare.json").read_text())


def _ses(run) -> set[tuple[int, int]]:
    doc = json.loads((run / "super_experts.json").read_text())
    return {(s["layer"], s["expert"]) for s in doc["super_experts"]}


def test_the_same_super_experts_on_prose_and_on_arithmetic(prose_run, tmp_path, capsys):
    arith = tmp_path / "arith"
    argv = ["profile", "--data", str(demo_mod.arithmetic_path()), "--device", "cpu", "--out", str(arith)]
    assert main(argv) == 0
    assert _ses(prose_run) == _ses(arith) == set(demo_mod.DEMO_SUPER_EXPERTS)
    _compare(tmp_path, prose_run, arith)
    assert "agree: the same SEs in every run" in capsys.readouterr().out


@pytest.mark.slow
def test_the_super_experts_survive_a_short_finetune_with_nothing_frozen(prose_run, tmp_path, capsys):
    model, tok = demo_mod.build_demo()
    masks = planted_masks(model, tok)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = finetune_demo(model, tok)
    assert len(losses) == FINETUNE.steps
    params = dict(model.named_parameters())
    # Nothing was held fixed: the planted entries moved as well as the rest.
    assert any(not torch.equal(params[n][m], before[n][m]) for n, m in masks.items())
    folder = tmp_path / "finetuned"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    tuned = tmp_path / "tuned"
    assert main(["profile", str(folder), "--seq-len", "64", "--samples", "16", "--device", "cpu",
                 "--out", str(tuned)]) == 0  # fmt: skip
    assert _ses(tuned) == _ses(prose_run) == set(demo_mod.DEMO_SUPER_EXPERTS)
    _compare(tmp_path, prose_run, tuned)
    assert "agree: the same SEs in every run" in capsys.readouterr().out
