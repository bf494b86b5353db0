"""Bad data files fail in one line; capped --samples and a too long --seq-len are said (issue 14.6, 14.12)."""

from __future__ import annotations

import json
import warnings

import pandas as pd
import pytest
import transformers as tf

from superexperts.capture.data import calibration, load_texts
from superexperts.models.demo import build_tokenizer
from superexperts.models.loading import warn_seq_len
from superexperts.runs.errors import SuperExpertsWarning, UserError

TEXT = "one two three four five six seven eight nine ten . " * 20


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def _write(path, content):
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bin.txt", bytes(range(256)) * 4, "not a text file"),
        ("latin1.txt", "café crème".encode("latin-1"), "not UTF-8 text \\(byte 0xe9 at offset 3\\)"),
        ("latin1.jsonl", '{"text": "café"}\n'.encode("latin-1"), "not UTF-8 text"),
        ("utf16.txt", "text".encode("utf-16"), "not a text file"),
        ("number.jsonl", '{"text": 5}\n', "record 0 has no string text \\(int"),
        ("list.json", '[{"text": ["a", "b"]}]', "record 0 has no string text \\(list"),
        ("nulltext.json", '{"data": [{"text": "a"}, {"text": null}]}', "record 1 has no string text"),
        ("scalar.json", "42", "holds a JSON int, not records"),
        ("string_in_list.jsonl", '"a"\n7\n', "record 1 has no string text"),
        ("bad.parquet", b"PAR1 not really parquet", "not a readable parquet file"),
    ],
)
def test_bad_data_files(tmp_path, name, content, message):
    spec = _write(tmp_path / name, content)
    with pytest.raises(UserError, match=message) as info:
        load_texts(spec)
    assert "\n" not in str(info.value)


def test_parquet_text_must_be_strings(tmp_path):
    pd.DataFrame({"text": ["a", None]}).to_parquet(tmp_path / "t.parquet")
    with pytest.raises(UserError, match="record 1 has no string text"):
        load_texts(str(tmp_path / "t.parquet"))


def test_a_single_json_document_is_one_text(tmp_path):
    """{"text": "..."} used to be split into one 'document' per character."""
    spec = _write(tmp_path / "one.json", json.dumps({"text": TEXT}))
    assert load_texts(spec) == ([TEXT], "\n\n")


def test_damaged_saved_dataset(tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "dataset_info.json").write_text("{broken")
    (folder / "state.json").write_text("{}")
    with pytest.raises(UserError, match="damaged saved dataset") as info:
        load_texts(str(folder))
    assert "\n" not in str(info.value)


def test_capped_samples_are_said(tmp_path, tok):
    spec = _write(tmp_path / "t.txt", TEXT)
    available = len(tok(TEXT, add_special_tokens=False).input_ids) // 15  # windows of 16 = BOS + 15
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        calib = calibration(spec, tok, seq_len=16, samples=available + 5, seed=0)
        calibration(spec, tok, seq_len=16, samples=available, seed=0)
    assert calib.input_ids.shape[0] == available
    said = [str(w.message) for w in caught if w.category is SuperExpertsWarning]
    assert len(said) == 1 and f"--samples {available + 5}" in said[0] and f"only {available} window" in said[0]


def test_seq_len_past_max_positions_is_said():
    config = tf.Qwen3MoeConfig(max_position_embeddings=256)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_seq_len(config, 256)
        warn_seq_len(config, 257)
    assert [str(w.message)[:40] for w in caught] == ["--seq-len 257 exceeds the model's max_po"]
