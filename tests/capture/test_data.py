"""Calibration data: every input form gives the same windows as a direct tokenization."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from superexperts.capture.data import calibration, load_texts
from superexperts.models.demo import build_tokenizer
from superexperts.runs.errors import UserError

TEXT = "one two three four five six seven eight nine ten . " * 20


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def _expected(tok, text, seq_len):
    """Windows computed directly: BOS + consecutive (seq_len - 1)-token chunks of the stream."""
    ids = tok(text, add_special_tokens=False).input_ids
    body = seq_len - 1
    return torch.tensor([[tok.bos_token_id] + ids[i * body:(i + 1) * body] for i in range(len(ids) // body)])


@pytest.mark.parametrize("form", ["txt", "jsonl", "json", "parquet", "folder", "saved_dataset"])
def test_file_forms_agree(tmp_path, tok, form):
    halves = [TEXT[: len(TEXT) // 2], TEXT[len(TEXT) // 2 :]]
    joined = "\n\n".join(halves)
    if form == "txt":
        path = tmp_path / "d.txt"
        path.write_text(joined)
    elif form == "jsonl":
        path = tmp_path / "d.jsonl"
        path.write_text("\n".join(json.dumps({"text": h}) for h in halves))
    elif form == "json":
        path = tmp_path / "d.json"
        path.write_text(json.dumps([{"text": h} for h in halves]))
    elif form == "parquet":
        path = tmp_path / "d.parquet"
        pd.DataFrame({"text": halves}).to_parquet(path)
    elif form == "folder":
        path = tmp_path / "folder"
        path.mkdir()
        (path / "a.txt").write_text(halves[0])
        (path / "b.txt").write_text(halves[1])
    else:
        from datasets import Dataset

        path = tmp_path / "saved"
        Dataset.from_dict({"text": halves}).save_to_disk(str(path))
    calib = calibration(str(path), tok, seq_len=16, samples=None)
    assert torch.equal(calib.input_ids, _expected(tok, joined, 16))
    assert calib.describe()["sha256"] == calibration(str(path), tok, seq_len=16, samples=None).describe()["sha256"]


def test_builtin_text_is_default_and_sampling_is_seeded(tok):
    all_windows = calibration(None, tok, seq_len=32, samples=None).input_ids
    a = calibration(None, tok, seq_len=32, samples=5, seed=3).input_ids
    b = calibration(None, tok, seq_len=32, samples=5, seed=3).input_ids
    c = calibration(None, tok, seq_len=32, samples=5, seed=4).input_ids
    assert torch.equal(a, b) and not torch.equal(a, c)
    rows = {tuple(r.tolist()) for r in all_windows}
    assert all(tuple(r.tolist()) in rows for r in a)  # a subset of the non-overlapping windows
    assert (a[:, 0] == tok.bos_token_id).all()


@pytest.mark.parametrize(
    ("spec", "kwargs", "message"),
    [
        (None, {"seq_len": 1}, "--seq-len must be >= 2"),
        (None, {"seq_len": 10**6}, "fewer than one window"),
        (None, {"seq_len": 16, "samples": 0}, "--samples must be >= 1"),
        ("./missing.txt", {"seq_len": 16}, "no such file"),
    ],
)
def test_bad_input(tok, spec, kwargs, message):
    kwargs.setdefault("samples", None)
    with pytest.raises(UserError, match=message):
        calibration(spec, tok, **kwargs)


def test_bad_files(tmp_path, tok):
    (tmp_path / "empty.txt").write_text("   ")
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\n{oops\n')
    (tmp_path / "notext.jsonl").write_text('{"body": "a"}\n')
    (tmp_path / "x.csv").write_text("a,b")
    for name, message in [("empty.txt", "is empty"), ("bad.jsonl", "not valid JSON"),
                          ("notext.jsonl", "'text' field"), ("x.csv", "unsupported file type")]:  # fmt: skip
        with pytest.raises(UserError, match=message):
            calibration(str(tmp_path / name), tok, seq_len=8, samples=None)
    with pytest.raises(UserError, match="no .txt"):
        load_texts(str(tmp_path / "nothing_here_dir" if (tmp_path / "nothing_here_dir").mkdir() is None else ""))
