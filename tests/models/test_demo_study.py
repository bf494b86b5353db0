"""The trained demo shows the paper's result, measured: pruning its SEs hurts, random pruning does not.

Also runs `make demo`'s commands (read from the Makefile) into a temporary folder.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import torch

from superexperts.cli import main
from superexperts.evaluate.ablate import ablate
from superexperts.models import demo as demo_mod

ROOT = Path(__file__).parents[2]


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="module")
def pruned(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("prune-eval")
    assert main(["prune-eval", "--random", "3", "--batch-size", "8", "--device", "cpu", "--out", str(out)]) == 0
    return json.loads((out / "prune_eval.json").read_text())


def test_se_pruning_raises_heldout_perplexity_far_more_than_random_pruning(pruned):
    ppl = {c["name"]: c["perplexity"] for c in pruned["conditions"]}
    ratio = {name: value / ppl["original"] for name, value in ppl.items()}
    randoms = [ratio[f"random-{s}"] for s in range(3)]
    assert ratio["super"] > max(randoms)
    assert ratio["super"] >= 1.5 and all(abs(r - 1) <= 0.05 for r in randoms)  # issue 13's bar
    data = pruned["data"]["perplexity"]
    assert data["spec"] == str(demo_mod.heldout_path()) and data["protocol"].startswith("each 64-token window = BOS")


def test_default_perplexity_windows_are_the_heldout_text_bos_first(pruned, demo):
    _, tok = demo
    body = tok(demo_mod.heldout_path().read_text(), add_special_tokens=False).input_ids
    detail = pruned["conditions"][0]["perplexity_detail"]
    assert detail["windows"] == len(body) // 63 and detail["seq_len"] == 64


def _greedy_sums(model, tok, rows: list[dict]) -> float:
    """Zero-shot accuracy computed here: is the greedy token after "<bos> a + b =" the sum?"""
    ctx = torch.tensor([tok(f"{r['a']} + {r['b']} =").input_ids for r in rows])
    target = torch.tensor([tok.convert_tokens_to_ids(str(r["sum"])) for r in rows])
    with torch.no_grad():
        return float((model(input_ids=ctx).logits[:, -1].argmax(-1) == target).float().mean())


@pytest.mark.slow
def test_arithmetic_task_is_the_greedy_sum_and_drops_without_the_super_experts(demo, offline):
    from superexperts.evaluate.lm_eval import check_tasks, run_tasks

    model, tok = demo
    rows = [json.loads(r) for r in (demo_mod.tasks_path() / "demo_arith.jsonl").read_text().splitlines()]
    manager = check_tasks(["demo_arith"], include_path=str(demo_mod.tasks_path()))

    def acc(**kwargs) -> float:
        return run_tasks(model, tok, ["demo_arith"], batch_size=16, task_manager=manager, **kwargs)["demo_arith"]["acc"]

    assert acc(num_fewshot=0) == pytest.approx(_greedy_sums(model, tok, rows))
    original = acc()
    with ablate(model, list(demo_mod.DEMO_SUPER_EXPERTS)):
        assert acc() < original
        assert acc(num_fewshot=0) == pytest.approx(_greedy_sums(model, tok, rows))


def makefile_demo_commands(out: Path) -> list[list[str]]:
    """The `superexperts ...` lines of the Makefile's demo recipe, with its variables filled in."""
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    recipe = text.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    values = {"DEMO_OUT": str(out), "DEMO_RES": str(ROOT / "src/superexperts/resources")}
    lines = [line.strip() for line in recipe.splitlines() if "$(BIN)/superexperts " in line]
    filled = [re.sub(r"\$\((\w+)\)", lambda m: values.get(m[1], m[0]), line) for line in lines]
    return [shlex.split(line.split("$(BIN)/superexperts ", 1)[1]) for line in filled]


@pytest.mark.slow
def test_make_demo_runs_the_whole_study_into_one_report(tmp_path, offline, capsys):
    commands = makefile_demo_commands(tmp_path / "demo")
    assert [c[0] for c in commands] == ["profile", "prune-eval", "sinks", "quant-eval", "report"]
    for argv in commands:
        argv = [*argv, "--device", "cpu"] if argv[0] != "report" else argv
        if argv[0] == "prune-eval":
            argv += ["--max-new-tokens", "8", "--limit", "30"]  # the study's shape, not its length, is under test
        assert main(argv) == 0, argv
        printed = capsys.readouterr().out
        assert argv[0] == "report" or "SYNTHETIC" in printed
    run = tmp_path / "demo"
    written = {"super_experts.json", "prune_eval.json", "sinks.json", "quant_eval.json", "report.html"}
    assert written <= {p.name for p in run.iterdir()}
    html = (run / "report.html").read_text()
    assert "SYNTHETIC DEMO MODEL" in html
    assert all(f'id="{s}"' in html for s in ("prune-eval", "causal", "sinks", "protection"))
    doc = json.loads((run / "prune_eval.json").read_text())
    names = [c["name"] for c in doc["conditions"]]
    assert "layer-controlled-0" in names and "demo_arith" in doc["conditions"][0]["tasks"] and "causal" in doc
    assert doc["model"]["synthetic"] is True
