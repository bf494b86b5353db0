"""`--batch-size auto` (the default of prune-eval, quant-eval, audit): resolved once the model is
loaded, recorded in the output, and the same perplexities as one window per forward."""

from __future__ import annotations

import json

import pytest

from superexperts.cli import main


def _prune_eval(out, *extra) -> dict:
    argv = ["prune-eval", "--experts", "1:13,2:41", "--device", "cpu", "--out", str(out), *extra]
    assert main(argv) == 0
    return json.loads((out / "prune_eval.json").read_text())


def test_auto_batch_is_recorded_and_scores_like_batch_one(tmp_path):
    auto = _prune_eval(tmp_path / "auto")
    one = _prune_eval(tmp_path / "one", "--batch-size", "1")
    chosen = auto["batching"]
    assert chosen["batch_size_requested"] == "auto" and chosen["batch_size"] > 1
    assert one["batching"] == {"batch_size_requested": 1, "batch_size": 1}
    for a, b in zip(auto["conditions"], one["conditions"], strict=True):
        assert a["perplexity"] == pytest.approx(b["perplexity"], rel=1e-5)


@pytest.mark.parametrize("cmd", ["prune-eval", "quant-eval"])
@pytest.mark.parametrize("value", ["0", "many", "1.5"])
def test_bad_batch_size_is_one_line_exit_2(cmd, value, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([cmd, "--batch-size", value, "--device", "cpu", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--batch-size must be 'auto' or a whole number >= 1" in err
    assert not out.exists()
