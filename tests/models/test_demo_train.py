"""Training the demo: seeded, planted entries fixed, only the training split seen."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from superexperts.models import demo as demo_mod
from superexperts.models.demo_data import demo_split
from superexperts.models.demo_train import Batches, TrainSettings, planted_masks, train_demo

TINY = TrainSettings(steps=2, batch_size=2, seq_len=16, warmup=1)


def test_training_moves_only_the_free_entries_and_is_seeded():
    model, tok, losses = train_demo(TINY)
    again, _, losses_again = train_demo(TINY)
    planted, _ = demo_mod.planted_demo()
    masks = planted_masks(planted, tok)
    before = dict(planted.named_parameters())
    moved = 0
    for name, p in model.named_parameters():
        mask = masks.get(name, torch.zeros_like(p, dtype=torch.bool))
        assert torch.equal(p[mask], before[name][mask]), name
        moved += int((p[~mask] != before[name][~mask]).sum())
        assert torch.equal(p, dict(again.named_parameters())[name])
    assert moved > 0 and len(losses) == 2 and losses == losses_again


def test_batches_start_with_bos_and_hold_only_training_sums():
    tok = demo_mod.build_tokenizer()
    batch = Batches(tok, TrainSettings(batch_size=64)).next()
    assert batch.shape == (64, 64) and (batch[:, 0] == tok.bos_token_id).all()
    heldout = set(demo_split(demo_mod.builtin_text()).heldout_pairs)
    plus = tok.convert_tokens_to_ids("+")
    seen = 0
    for row in batch.tolist():
        words = tok.convert_ids_to_tokens(row)
        for i in range(2, len(row) - 1):  # a "+" at position 1 follows BOS: its operand was cut off
            if row[i] == plus:  # "+" occurs only inside "a + b = c ." lines
                assert (int(words[i - 1]), int(words[i + 1])) not in heldout
                seen += 1
    assert seen > 0


def _train_script():
    import importlib.util

    path = Path(__file__).parents[2] / "scripts" / "train_demo.py"
    spec = importlib.util.spec_from_file_location("train_demo_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_accepts_the_shipped_weights_and_refuses_a_model_without_its_chain():
    """`train_demo.py --check` checks what must reproduce (not bit identity): the shipped SEs and the collapse."""
    from superexperts.evaluate.ablate import apply_ablation
    from superexperts.models.demo import DEMO_SUPER_EXPERTS, build_demo

    script = _train_script()
    model, tokenizer = build_demo()
    ses, collapse = script.study(model, tokenizer)
    assert sorted(ses) == sorted(DEMO_SUPER_EXPERTS) and collapse == pytest.approx(54.20 / 11.60, rel=0.01)
    assert script.reproduces(model, tokenizer) == []
    apply_ablation(model, [DEMO_SUPER_EXPERTS[1]], mode="zero")  # the amplifying link zeroed for good
    failures = script.reproduces(model, tokenizer)
    assert any(f.startswith("SEs ") for f in failures)
