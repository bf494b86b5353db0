"""lm-evaluation-harness end to end on an in-memory tiny model with the task shipped in lm_eval_task/."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import families
from superexperts.evaluate.generation import generate
from superexperts.evaluate.lm_eval import PACKAGED_TASKS, _metric_table, check_tasks, run_tasks
from superexperts.runs.errors import UserError

TASK_DIR = Path(__file__).with_name("lm_eval_task")
TASK = "superexperts_tiny_choice"
GEN_TASK = "superexperts_tiny_gen"  # generate_until, the path GSM8K takes


def choice_loglik(model, tok, question: str, choice: str) -> float:
    """log p(" " + choice | question), summed over the choice's tokens (lm-eval's target delimiter)."""
    context = tok(question)["input_ids"]
    full = tok(question + " " + choice)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([full])).logits[0].double(), dim=-1)
    return sum(float(logp[t - 1, full[t]]) for t in range(len(context), len(full)))


def expected_accuracy(model, tok, docs: list[dict]) -> tuple[float, float]:
    acc, acc_norm = [], []
    for doc in docs:
        lls = np.array([choice_loglik(model, tok, doc["question"], c) for c in doc["choices"]])
        lengths = np.array([len(c) for c in doc["choices"]], dtype=float)
        acc.append(np.argmax(lls) == doc["answer"])
        acc_norm.append(np.argmax(lls / lengths) == doc["answer"])
    return float(np.mean(acc)), float(np.mean(acc_norm))


def expected_exact_match(model, tok, docs: list[dict]) -> float:
    """Greedy continuation (6 tokens, cut at the first newline) equal to the right choice."""
    outputs = generate(model, tok, [d["question"] for d in docs], max_new_tokens=6)
    return float(np.mean([o["text"].split("\n")[0] == d["choices"][d["answer"]] for o, d in zip(outputs, docs)]))


@pytest.mark.slow
def test_runs_local_tasks_end_to_end(char_tok, offline):
    model = families.build("qwen3_moe")
    docs = [json.loads(line) for line in (TASK_DIR / "tiny_choice.jsonl").read_text().splitlines()]
    results = run_tasks(model, char_tok, [TASK, GEN_TASK], include_path=str(TASK_DIR), limit=4, batch_size=2)
    acc, acc_norm = expected_accuracy(model, char_tok, docs[:4])
    assert set(results) == {TASK, GEN_TASK}
    assert results[TASK]["acc"] == pytest.approx(acc)
    assert results[TASK]["acc_norm"] == pytest.approx(acc_norm)
    assert "acc_stderr" in results[TASK]
    assert results[GEN_TASK]["exact_match"] == pytest.approx(expected_exact_match(model, char_tok, docs[:4]))


def test_lm_eval_missing(monkeypatch, tiny_qwen3, char_tok):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # makes `import lm_eval` raise ImportError
    with pytest.raises(UserError, match=r"pip install 'superexperts\[eval\]'"):
        run_tasks(tiny_qwen3, char_tok, [TASK], include_path=str(TASK_DIR))


@pytest.mark.slow
def test_unknown_task_lists_close_matches(offline, tmp_path, monkeypatch):
    import lm_eval.tasks

    monkeypatch.setenv("SUPEREXPERTS_CACHE", str(tmp_path))
    with pytest.raises(UserError, match=f"Unknown lm-eval task 'superexperts_tiny_choise'.*{TASK}") as first:
        check_tasks(["superexperts_tiny_choise"], include_path=str(TASK_DIR))
    saved = json.loads(next(tmp_path.glob("lm_eval-tasks-*.json")).read_text())
    assert "arc_easy" in saved and TASK not in saved  # lm-eval's own names; local tasks are indexed each time

    class NoFullIndex(lm_eval.tasks.TaskManager):
        def __init__(self, *args, include_defaults=True, **kwargs):
            assert not include_defaults, "indexed lm-eval's registry again"
            super().__init__(*args, include_defaults=include_defaults, **kwargs)

    monkeypatch.setattr(lm_eval.tasks, "TaskManager", NoFullIndex)
    with pytest.raises(UserError) as second:  # refused from the saved names, with the same message
        check_tasks(["superexperts_tiny_choise"], include_path=str(TASK_DIR))
    assert str(second.value) == str(first.value)


def test_bad_task_arguments(tmp_path):
    with pytest.raises(UserError, match="No lm-eval tasks"):
        check_tasks([])
    with pytest.raises(UserError, match="does not exist"):
        check_tasks([TASK], include_path=str(tmp_path / "missing"))


def test_bad_run_arguments(tiny_qwen3, char_tok):
    with pytest.raises(UserError, match="batch_size"):
        run_tasks(tiny_qwen3, char_tok, [TASK], batch_size=0)
    with pytest.raises(UserError, match="limit"):
        run_tasks(tiny_qwen3, char_tok, [TASK], limit=0)


def test_metric_table_keeps_metrics_only():
    raw = {"gsm8k": {"alias": "gsm8k", "sample_len": 5, "exact_match,strict-match": 0.25,
                     "exact_match_stderr,strict-match": "N/A", "exact_match,flexible-extract": 0.5},
           "arc_easy": {"acc,none": 0.75, "acc_stderr,none": 0.1, "acc_norm,none": float("nan")}}
    assert _metric_table(raw) == {
        "gsm8k": {"exact_match,strict-match": 0.25, "exact_match,flexible-extract": 0.5},
        "arc_easy": {"acc": 0.75, "acc_stderr": 0.1},
    }


def test_packaged_tasks_are_found_by_name_without_an_include_folder(offline):
    """`--tasks demo_arith` for a pip user: the package's own resources/tasks are always searched."""
    manager = check_tasks(["demo_arith"])
    assert "demo_arith" in manager.all_tasks
    assert str(PACKAGED_TASKS).endswith("resources/tasks") and (PACKAGED_TASKS / "demo_arith.yaml").is_file()
