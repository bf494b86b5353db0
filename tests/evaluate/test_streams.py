"""Perplexity data specs -> token streams with the reference's joining rules."""

from __future__ import annotations

import json

import pytest

import superexperts.capture.data
from superexperts.evaluate.perplexity import C4_DOCUMENTS, C4_WINDOWS
from superexperts.evaluate.streams import eval_stream
from superexperts.runs.runfolder import tensor_sha256


def test_local_file_joined_by_blank_line(tmp_path, char_tok):
    rows = ["first document.", "second, longer document."]
    path = tmp_path / "eval.jsonl"
    path.write_text("\n".join(json.dumps({"text": r}) for r in rows))
    stream = eval_stream(str(path), char_tok)
    assert char_tok.decode(stream.token_ids.tolist()) == rows[0] + "\n\n" + rows[1]
    assert stream.max_windows is None
    described = stream.describe()
    assert described["tokens"] == len(rows[0]) + 2 + len(rows[1])
    assert described["sha256"] == tensor_sha256(stream.token_ids)
    assert described["spec"] == str(path)


def test_c4_documents_joined_by_space_and_capped(monkeypatch, char_tok):
    docs = [f"d{i}" for i in range(C4_DOCUMENTS + 50)]
    monkeypatch.setattr(superexperts.capture.data, "load_texts", lambda spec, flag="--data": (docs, ""))  # no network in tests
    stream = eval_stream("c4", char_tok)
    assert char_tok.decode(stream.token_ids.tolist()) == " ".join(docs[:C4_DOCUMENTS])
    assert stream.max_windows == C4_WINDOWS


def test_missing_file_is_a_user_error(tmp_path, char_tok):
    from superexperts.runs.errors import UserError

    with pytest.raises(UserError, match="no such file"):
        eval_stream(str(tmp_path / "missing.txt"), char_tok)
