"""`prune-eval --stream`: each condition's perplexity streamed layer by layer equals the in-memory run."""

from __future__ import annotations

import json

import pytest

from superexperts.cli import main
from superexperts.models.demo import heldout_path


def _prune_eval(demo_dir, out, *extra):
    argv = ["prune-eval", str(demo_dir), "--experts", "1:13,2:41", "--random", "1", "--ppl", str(heldout_path()),
            "--seq-len", "32", "--max-windows", "3", "--batch-size", "2", "--dtype", "float32", "--out", str(out),
            *extra]  # fmt: skip
    assert main(argv) == 0
    return json.loads((out / "prune_eval.json").read_text())


@pytest.mark.parametrize("mode", ["zero", "skip"])
def test_streamed_perplexity_per_condition_equals_in_memory(demo_dir, tmp_path, mode):
    in_memory = _prune_eval(demo_dir, tmp_path / "mem", "--device", "cpu", "--mode", mode)
    streamed = _prune_eval(demo_dir, tmp_path / "stream", "--stream", "--mode", mode)
    assert [c["name"] for c in streamed["conditions"]] == [c["name"] for c in in_memory["conditions"]]
    for got, want in zip(streamed["conditions"], in_memory["conditions"]):
        assert got["experts"] == want["experts"] and got["mode"] == want["mode"]
        assert got["perplexity"] == pytest.approx(want["perplexity"], rel=1e-5), got["name"]
        assert got["perplexity_detail"]["streamed"] is True
    # pruning moves perplexity well past the tolerance: the ablation is applied in the streamed run too
    original, pruned = (c["perplexity"] for c in streamed["conditions"][:2])
    assert pruned != pytest.approx(original, rel=1e-3)
    assert streamed["request"]["stream"] is True


@pytest.mark.parametrize(("extra", "flag"), [
    (["--tasks", "arc_easy"], "--tasks"),
    (["--generate", "Hello"], "--generate"),
    (["--causal"], "--causal"),
    (["--mode", "mean"], "--mode mean"),
    (["--device-map", "auto"], "--stream and --device-map"),
])  # fmt: skip
def test_whole_model_parts_refused_with_stream(demo_dir, tmp_path, capsys, extra, flag):
    if flag == "--tasks":
        pytest.importorskip("lm_eval")
    out = tmp_path / "out"
    argv = ["prune-eval", str(demo_dir), "--experts", "1:13", "--ppl", str(heldout_path()), "--stream", "--out", str(out),
            *extra]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert flag in err and len(err.splitlines()) == 1
    if flag != "--stream and --device-map":
        assert "needs the whole model; drop --stream or use --device-map auto" in err
    assert not out.exists()
