"""The CLI's perplexity is the reference protocol: the tokenizer's own ids of the joined text
(a BOS the tokenizer adds stays at position 0), cut into non-overlapping windows (issue 9)."""

import json
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from superexperts.cli import main
from superexperts.evaluate.perplexity import perplexity
from superexperts.models.demo import builtin_text, demo_checkpoint

SEQ_LEN = 16


def _checkpoint(tmp_path, adds_bos: bool):
    """The demo checkpoint, or a copy whose tokenizer adds no special tokens."""
    source = demo_checkpoint()
    if adds_bos:
        return None, source
    folder = tmp_path / "no-bos"
    shutil.copytree(source, folder)
    spec = json.loads((folder / "tokenizer.json").read_text())
    spec["post_processor"] = None
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    return str(folder), folder


@pytest.mark.parametrize("adds_bos", [True, False], ids=["tokenizer-adds-bos", "no-bos"])
def test_cli_perplexity_equals_reference_protocol(tmp_path, adds_bos):
    model_arg, folder = _checkpoint(tmp_path, adds_bos)
    text = builtin_text()[:4000]
    data = tmp_path / "eval.txt"
    data.write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    argv = ["--ppl", str(data), "--seq-len", str(SEQ_LEN), "--experts", "1:13", "--out", str(out),
            "--device", "cpu", "--dtype", "float32"]
    assert main(["prune-eval", *([model_arg] if model_arg else []), *argv]) == 0
    document = json.loads((out / "prune_eval.json").read_text())

    # Independent computation: the reference's `tokenizer(text).input_ids`, windows of SEQ_LEN.
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer(text, return_tensors="pt").input_ids[0]
    assert (ids[0] == tokenizer.bos_token_id) == adds_bos
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    expected = perplexity(model, ids, seq_len=SEQ_LEN)
    original = document["conditions"][0]
    assert original["name"] == "original"
    assert original["perplexity_detail"]["windows"] == ids.numel() // SEQ_LEN
    assert original["perplexity"] == pytest.approx(expected["perplexity"], rel=1e-5)
