"""Pruning by a one-pass criterion with and without SE protection: hand-built tables, then prune-eval."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from superexperts.cli import main
from superexperts.identify.pruning_criteria import CRITERIA, format_plan, pruning_plan
from superexperts.runs.errors import UserError


def table(values: dict[str, np.ndarray], shared_layers=()) -> pd.DataFrame:
    """values[column][layer, expert] for routed experts; a shared expert (NaN reap) per listed layer."""
    layers, experts = next(iter(values.values())).shape
    rows = [{"layer": layer, "expert": e, "kind": "routed", **{c: float(v[layer, e]) for c, v in values.items()}}
            for layer in range(layers) for e in range(experts)]  # fmt: skip
    rows += [{"layer": layer, "expert": -1, "kind": "shared", "tokens_routed": 99.0, "reap_saliency": np.nan,
              "ean": 1.0} for layer in shared_layers]  # fmt: skip
    return pd.DataFrame(rows)


def lowest_by_loop(v: np.ndarray, fraction: float, keep=()) -> list[tuple[int, int]]:
    out = []
    for layer in range(v.shape[0]):
        ranked = sorted(range(v.shape[1]), key=lambda e: (v[layer, e], e))
        ranked = [e for e in ranked if (layer, e) not in keep]
        out += [(layer, e) for e in ranked[: int(v.shape[1] * fraction)]]
    return sorted(out)


@pytest.mark.parametrize("criterion", sorted(CRITERIA))
@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_lowest_fraction_per_layer_with_and_without_protection(criterion, fraction):
    rng = np.random.default_rng(7)
    columns = {c: rng.uniform(0, 10, size=(3, 16)) for c in CRITERIA.values()}
    v = columns[CRITERIA[criterion]]
    v[1, 5] = v[1].min() - 1  # an SE the criterion ranks lowest (e.g. routed only at the sink token)
    v[2, 3] = v[2, 4]  # a tie: the lower index goes first
    ses = [(1, 5), (2, 9), (0, "shared")]
    plan = pruning_plan(table(columns, shared_layers=[0]), criterion, fraction, protect=ses)
    assert plan.unprotected == lowest_by_loop(v, fraction)
    assert plan.protected == lowest_by_loop(v, fraction, keep={(1, 5), (2, 9)})
    assert plan.per_layer == {0: int(16 * fraction), 1: int(16 * fraction), 2: int(16 * fraction)}
    assert plan.super_experts_hit == [se for se in ses if se in plan.unprotected]
    assert (1, 5) in plan.super_experts_hit and (1, 5) not in plan.protected
    assert len(plan.protected) == len(plan.unprotected)
    doc = plan.to_json()
    assert doc["super_experts_pruned_unprotected"] == [{"layer": 1, "expert": 5}] + (
        [{"layer": 2, "expert": 9}] if (2, 9) in plan.unprotected else [])  # fmt: skip
    assert "1:5" in format_plan(doc)


def test_unprotected_only_and_condition_names():
    v = {c: np.arange(16, dtype=float).reshape(2, 8) for c in CRITERIA.values()}
    plan = pruning_plan(table(v), "ean", 0.25)
    assert plan.conditions() == [("ean-0.25", [(0, 0), (0, 1), (1, 0), (1, 1)])]
    protected = pruning_plan(table(v), "ean", 0.25, protect=[(0, 0)])
    assert [n for n, _ in protected.conditions()] == ["ean-0.25", "ean-0.25-protect-super"]
    assert protected.protected == [(0, 1), (0, 2), (1, 0), (1, 1)]


@pytest.mark.parametrize("criterion, fraction, protect, message", [
    ("reep", 0.25, [], "Did you mean 'reap'"),
    ("reap", 1.0, [], "must be in (0, 1)"),
    ("reap", 0.05, [], "prunes no expert"),
    ("reap", 0.5, [(0, e) for e in range(6)], "cannot prune 4 experts while protecting 6"),
])  # fmt: skip
def test_bad_requests_are_one_line(criterion, fraction, protect, message):
    v = {c: np.arange(16, dtype=float).reshape(2, 8) for c in CRITERIA.values()}
    with pytest.raises(UserError) as e:
        pruning_plan(table(v), criterion, fraction, protect)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_missing_criterion_values_name_the_fix():
    v = {c: np.arange(16, dtype=float).reshape(2, 8) for c in CRITERIA.values()}
    v["reap_saliency"][1, 2] = np.nan  # e.g. Llama4, or a run profiled before the column existed
    with pytest.raises(UserError, match="no usable reap_saliency"):
        pruning_plan(table(v), "reap", 0.25)
    assert pruning_plan(table(v), "frequency", 0.25).unprotected  # the other criteria still work


@pytest.fixture(scope="module")
def demo_run(demo_profile_run):
    return demo_profile_run[:2]


def test_prune_eval_criterion_end_to_end_on_the_demo(demo_run, tmp_path, capsys):
    folder, prof = demo_run
    ses = json.loads((folder / "super_experts.json").read_text())["super_experts"]
    ses = [(s["layer"], s["expert"]) for s in ses]
    argv = ["prune-eval", "--from", str(folder), "--prune-by", "frequency", "--fraction", "0.25",
            "--seq-len", "32", "--max-windows", "1", "--device", "cpu", "--out", str(tmp_path)]
    assert main(argv) == 0
    doc = json.loads((tmp_path / "prune_eval.json").read_text())
    assert [c["name"] for c in doc["conditions"]] == ["original", "frequency-0.25", "frequency-0.25-protect-super"]
    expected = pruning_plan(prof.expert_stats, "frequency", 0.25, protect=ses)
    pruned = [[(e["layer"], e["expert"]) for e in c["experts"]] for c in doc["conditions"][1:]]
    assert pruned == [expected.unprotected, expected.protected]
    assert doc["pruning"] == json.loads(json.dumps(expected.to_json()))
    assert not set(ses) & set(pruned[1])
    assert all(isinstance(c["perplexity"], float) for c in doc["conditions"])
    assert format_plan(doc["pruning"]) in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (["--prune-by", "reap"], "go together"),
    (["--prune-by", "reap", "--fraction", "0.25", "--random", "2"], "drop --random"),
    (["--prune-by", "reap", "--fraction", "0.25", "--experts", "1:13"], "pass --from RUN_DIR"),
    (["--prune-by", "reap", "--fraction", "0.25", "--protect", "all"], "--protect 'all'"),
])  # fmt: skip
def test_prune_eval_criterion_bad_input_writes_nothing(tmp_path, capsys, extra, message):
    assert main(["prune-eval", "--device", "cpu", "--out", str(tmp_path), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "prune_eval.json").exists()
