"""prune-eval: conditions, control summaries, the model left unmodified, the CLI end to end on the demo."""

from __future__ import annotations

import hashlib
import json
import statistics

import pytest
import torch

from superexperts.cli import main
from superexperts.evaluate.ablate import expert_mean_outputs
from superexperts.evaluate.ablate.conditions import EvalPlan, build_conditions, run_conditions, summarize
from superexperts.models.adapters import map_model
from superexperts.models.demo import DEMO_SUPER_EXPERTS, build_demo, builtin_text


def state_hash(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def demo():
    model, tokenizer = build_demo()
    return model, tokenizer, tokenizer(builtin_text(), return_tensors="pt").input_ids[0][:97]


def test_conditions_and_controls(demo):
    model, _, _ = demo
    conds = build_conditions(map_model(model), list(DEMO_SUPER_EXPERTS), n_random=3, layer_controlled=True, seed=4)
    assert [c.name for c in conds] == ["original", "super"] + [f"random-{s}" for s in (4, 5, 6)] + [
        f"layer-controlled-{s}" for s in (4, 5, 6)]
    assert conds[0].experts == [] and conds[1].experts == list(DEMO_SUPER_EXPERTS)
    for c in conds[2:]:
        assert len(c.experts) == 2 and not set(c.experts) & set(DEMO_SUPER_EXPERTS)
    assert all({layer for layer, _ in c.experts} == {1, 2} for c in conds[5:])


@pytest.mark.parametrize("mode", ["zero", "mean", "skip"])
def test_model_unmodified_after_every_condition(demo, mode):
    model, tokenizer, ids = demo
    before = state_hash(model)
    means = expert_mean_outputs(model, ids[:64].view(2, 32)) if mode == "mean" else None
    # Three random sets: the trained demo's routers specialise, so one random pair may see none of these tokens.
    conds = build_conditions(map_model(model), list(DEMO_SUPER_EXPERTS), mode=mode, n_random=3)
    plan = EvalPlan(ppl_ids=ids[:64], seq_len=32)
    results = run_conditions(model, tokenizer, conds, plan, means=means)
    assert state_hash(model) == before
    assert [r["name"] for r in results] == ["original", "super", "random-0", "random-1", "random-2"]
    # The ablations were active (mean mode may leave the SEs' BOS-only output as it is: Owen et al.)
    assert any(r["perplexity"] != results[0]["perplexity"] for r in results[1:])
    again = run_conditions(model, tokenizer, conds[:1], plan)[0]
    assert again["perplexity"] == results[0]["perplexity"]  # ... and is gone afterwards


def test_summarize_matches_statistics():
    results = [{"name": "original", "perplexity": 9.0},
               {"name": "random-0", "perplexity": 8.0, "tasks": {"arc": {"acc": 0.5, "acc_stderr": 0.1}},
                "generation_metrics": {"loop_fraction": 0.0}},
               {"name": "random-1", "perplexity": 10.0, "tasks": {"arc": {"acc": 0.7, "acc_stderr": 0.1}},
                "generation_metrics": {"loop_fraction": 0.5}},
               {"name": "random-2", "perplexity": 12.5, "tasks": {"arc": {"acc": 0.6, "acc_stderr": 0.1}},
                "generation_metrics": {"loop_fraction": 0.25}}]  # fmt: skip
    s = summarize(results)
    assert set(s) == {"random"}
    ppl = s["random"]["perplexity"]
    assert ppl["mean"] == pytest.approx(statistics.mean([8.0, 10.0, 12.5]))
    assert ppl["std"] == pytest.approx(statistics.stdev([8.0, 10.0, 12.5]))
    assert (ppl["min"], ppl["max"], ppl["n"]) == (8.0, 12.5, 3)
    assert s["random"]["tasks"]["arc"]["acc"]["mean"] == pytest.approx(0.6)
    assert s["random"]["generation_metrics"]["loop_fraction"]["std"] == pytest.approx(0.25)


def test_cli_end_to_end_on_the_demo(tmp_path, capsys):
    out = tmp_path / "pe"
    argv = ["prune-eval", "--random", "1", "--layer-controlled", "--seq-len", "32", "--max-windows", "2",
            "--samples", "2", "--generate", "The", "--max-new-tokens", "4", "--causal", "1", "--device", "cpu",
            "--out", str(out)]
    assert main(argv) == 0
    doc = json.loads((out / "prune_eval.json").read_text())
    names = [c["name"] for c in doc["conditions"]]
    assert names == ["original", "super", "random-0", "layer-controlled-0"]
    super_ = doc["conditions"][1]
    assert {(e["layer"], e["expert"]) for e in super_["experts"]} == set(DEMO_SUPER_EXPERTS)  # profiled
    for c in doc["conditions"]:
        assert isinstance(c["perplexity"], float) and c["perplexity_detail"]["windows"] == 2
        assert c["mode"] == ("none" if c["name"] == "original" else "zero")
        assert c["generations"][0]["prompt"] == "The" and "loop_fraction" in c["generations"][0]["metrics"]
    assert set(doc["summary"]) == {"random", "layer-controlled"}
    causal = {(c["layer"], c["expert"]): c for c in doc["causal"]["candidates"]}
    assert len(causal) == 3 and {k for k, c in causal.items() if c["causal"]} == set(DEMO_SUPER_EXPERTS)
    assert doc["command"] == "prune-eval" and "torch" in doc["versions"] and doc["data"]["perplexity"]["sha256"]
    printed = capsys.readouterr().out
    assert "layer-controlled-0" in printed and "prune_eval.json" in printed
    assert main(argv) == 2  # refuses to replace it without --overwrite
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--mode", "zeros"], "Did you mean 'zero'"),
    (["--layer-controlled"], "--random N_SEEDS"),
    (["--experts", "1:13,9:0"], "out of range"),
    (["--experts", "1:shared"], "no shared expert"),
    (["--experts", "missing/list.json"], "not found"),
    (["--from", "no/such/run"], "not found"),
    (["--generate", "prompts/none.txt"], "no such prompts file"),
    (["--random", "-1"], ">= 0"),
])  # fmt: skip
def test_cli_bad_input_writes_nothing(tmp_path, capsys, extra, message):
    out = tmp_path / "pe"
    assert main(["prune-eval", "--device", "cpu", "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (out / "prune_eval.json").exists()


def test_from_run_dir_adds_the_report_section(tmp_path, demo, capsys):
    from superexperts.capture.profile import profile
    from superexperts.identify.profile_run import save_run
    from superexperts.identify.rules import identify

    model, _, ids = demo
    prof = profile(model, ids[:64].view(2, 32))
    prof.meta["synthetic"] = True  # as `superexperts profile` records for the demo
    save_run(tmp_path, prof, identify(prof.expert_stats, prof.num_layers, "paper"))
    argv = ["prune-eval", "--from", str(tmp_path), "--mode", "skip", "--seq-len", "32", "--max-windows", "1",
            "--device", "cpu"]
    assert main(argv) == 0
    doc = json.loads((tmp_path / "prune_eval.json").read_text())
    assert doc["experts_source"].endswith("super_experts.json")
    assert {(e["layer"], e["expert"]) for e in doc["conditions"][1]["experts"]} == set(DEMO_SUPER_EXPERTS)
    assert doc["conditions"][1]["mode"] == "skip"
    assert "Pruning experiments" in (tmp_path / "report.html").read_text()


def test_cli_tasks_per_condition(tmp_path, monkeypatch):
    from pathlib import Path

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    tasks_dir = Path(__file__).parents[1] / "lm_eval_task"  # the evaluate tests' local task
    argv = ["prune-eval", "--experts", "1:13,2:41", "--random", "2", "--tasks", "superexperts_tiny_choice",
            "--tasks-include", str(tasks_dir), "--limit", "2", "--seq-len", "32", "--max-windows", "1",
            "--device", "cpu", "--out", str(tmp_path)]
    assert main(argv) == 0
    doc = json.loads((tmp_path / "prune_eval.json").read_text())
    assert [c["name"] for c in doc["conditions"]] == ["original", "custom", "random-0", "random-1"]
    accs = [c["tasks"]["superexperts_tiny_choice"]["acc"] for c in doc["conditions"]]
    assert all(0.0 <= a <= 1.0 for a in accs)
    summary = doc["summary"]["random"]["tasks"]["superexperts_tiny_choice"]["acc"]
    assert summary["mean"] == pytest.approx(statistics.mean(accs[2:]))


def test_expert_range_checked_from_the_config():
    from superexperts.models.demo import demo_config
    from superexperts.models.experts import check_experts_in_config
    from superexperts.runs.errors import UserError

    config = demo_config(100)  # 8 layers x 64 experts
    check_experts_in_config([(7, 63), (1, "shared")], config)
    with pytest.raises(UserError, match="layers 0..7"):
        check_experts_in_config([(8, 0)], config)
    with pytest.raises(UserError, match="experts 0..63"):
        check_experts_in_config([(1, 64)], config)
