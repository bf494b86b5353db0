"""The demo's data: a fixed split whose held-out part is never trained on, shipped as resources."""

from __future__ import annotations

import json

from superexperts.models import demo as demo_mod
from superexperts.models.demo_data import ARITH_MAX, addition_line, arithmetic_records, demo_split, paragraphs


def test_heldout_text_and_pairs_are_disjoint_from_training():
    split = demo_split(demo_mod.builtin_text())
    assert split.train_text + split.heldout_text == paragraphs(demo_mod.builtin_text())
    assert not set(split.train_pairs) & set(split.heldout_pairs)
    train = set(split.train_units())
    assert not any(addition_line(a, b) in train for a, b in split.heldout_pairs)
    assert not any(p in train for p in split.heldout_text)
    assert len(split.train_pairs) + len(split.heldout_pairs) == (ARITH_MAX + 1) ** 2


def test_shipped_files_are_the_split():
    split = demo_split(demo_mod.builtin_text())
    assert demo_mod.heldout_path().read_text(encoding="utf-8") == split.heldout()
    assert demo_mod.prompts_path().read_text(encoding="utf-8").splitlines() == split.prompts()
    rows = (demo_mod.tasks_path() / "demo_arith.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(r) for r in rows] == arithmetic_records(split.heldout_pairs)


def test_every_heldout_word_is_in_the_vocabulary():
    tok = demo_mod.build_tokenizer()
    ids = tok(demo_mod.heldout_path().read_text(encoding="utf-8"), add_special_tokens=False).input_ids
    assert tok.unk_token_id not in ids
