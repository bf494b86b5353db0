"""Atom pruning plans on hand-built score tables, checked against plain sorting."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from superexperts.identify.atom_pruning import atom_pruning_plan, atom_scores, format_atom_plan, routed_scores
from superexperts.runs.errors import UserError

SE = (1, 0)
SUPER_ATOMS = {SE: [(2, 0.93)]}


def _table() -> pd.DataFrame:
    """2 MoE layers x 2 routed experts x 4 atoms with distinct scores, + a shared expert's atoms (never ranked)."""
    rng = np.random.default_rng(0)
    rows = [{"layer": la, "expert": e, "kind": "routed", "atom": k, "score": float(s)}
            for (la, e, k), s in zip([(la, e, k) for la in (0, 1) for e in (0, 1) for k in range(4)], rng.permutation(16) + 1.0)]  # fmt: skip
    rows += [{"layer": 1, "expert": -1, "kind": "shared", "atom": k, "score": 0.0} for k in range(3)]
    table = pd.DataFrame(rows)
    table.loc[(table.layer == 1) & (table.expert == 0) & (table.atom == 2), "score"] = 0.5  # the super atom: lowest
    return table


def _lowest(rows: pd.DataFrame, n: int) -> list[tuple]:
    ordered = sorted(rows.itertuples(), key=lambda r: (r.score, r.layer, r.expert, r.atom))
    return [(r.layer, r.expert, r.atom) for r in ordered[:n]]


def test_layer_scope_prunes_the_lowest_of_each_layer():
    table = _table()
    plan = atom_pruning_plan(table, 0.25, criterion="camera", protect="super-atoms", super_experts=[SE],
                             super_atoms=SUPER_ATOMS)  # fmt: skip
    routed = table[table.kind == "routed"]
    want = sorted(_lowest(routed[routed.layer == 0], 2) + _lowest(routed[routed.layer == 1], 2))
    assert plan.scope == "layer" and plan.unprotected == want and plan.counts == {"layer 0": 2, "layer 1": 2}
    assert (1, 0, 2) in plan.unprotected and (1, 0, 2) not in plan.protected
    others = routed[(routed.layer == 1) & ~((routed.expert == 0) & (routed.atom == 2))]
    assert plan.protected == sorted(_lowest(routed[routed.layer == 0], 2) + _lowest(others, 2))
    [rank] = plan.super_atoms
    assert rank["percentile"] == 0.0 and rank["pruned_unprotected"] and not rank["pruned_protected"]
    assert [name for name, _ in plan.conditions()] == ["camera-0.25", "camera-0.25-protect-super-atoms"]
    assert "percentile 0.0, PRUNED unprotected" in format_atom_plan(plan.to_json())


def test_global_scope_and_whole_expert_protection():
    table = _table()
    table.loc[(table.layer == 1) & (table.expert == 0) & (table.atom == 2), "score"] = 9.5  # mid-table now
    plan = atom_pruning_plan(table, 0.25, criterion="heapr", protect="super", super_experts=[SE],
                             super_atoms=SUPER_ATOMS)  # fmt: skip
    routed = table[table.kind == "routed"]
    assert plan.scope == "global" and plan.unprotected == sorted(_lowest(routed, 4))
    assert plan.protected == sorted(_lowest(routed[~((routed.layer == 1) & (routed.expert == 0))], 4))
    assert plan.kept == 4 and plan.total == 16
    [rank] = plan.super_atoms
    assert rank["percentile"] == pytest.approx(100 * (routed.score < 9.5).sum() / 16)
    assert not rank["pruned_unprotected"]


def test_ties_break_by_layer_expert_atom():
    table = pd.DataFrame({"layer": [0] * 4, "expert": [1, 0, 1, 0], "atom": [0, 1, 1, 0], "score": [1.0] * 4})
    assert atom_pruning_plan(table, 0.5).unprotected == [(0, 0, 0), (0, 0, 1)]


@pytest.mark.parametrize("change, kwargs, match", [
    (lambda t: t.drop(columns="score"), {}, "lacks score"),
    (lambda t: t.assign(score=t.score.where(t.atom != 3)), {}, r"no score for atom 0:0:3 \(NaN\)"),
    (lambda t: t, {"protect": "super-atoms"}, "needs the super atoms"),
    (lambda t: t, {"protect": "super"}, "needs Super Experts"),
    (lambda t: t, {"protect": "supper"}, "Did you mean 'super'"),
    (lambda t: t.iloc[:2], {}, "prunes no atom"),
])  # fmt: skip
def test_bad_tables_and_flags_are_one_line_errors(change, kwargs, match):
    with pytest.raises(UserError, match=match) as e:
        atom_pruning_plan(change(_table()), 0.25, **kwargs)
    assert "\n" not in str(e.value)


def test_protection_that_leaves_too_few_atoms_is_refused():
    table = _table()
    with pytest.raises(UserError, match="cannot prune 7 atoms layer 1 while protecting 4"):
        atom_pruning_plan(table, 0.9, protect="super", super_experts=[SE])


def test_camera_scores_from_a_profile_and_a_missing_table():
    stats = pd.DataFrame({"layer": [1, 1], "expert": [0, -1], "kind": ["routed", "shared"], "atom": [0, 0],
                          "camera_sum": [10.0, 1.0], "camera_max": [2.0, 1.0]})  # fmt: skip
    prof = type("P", (), {"atom_stats": stats})()
    scores = atom_scores(prof, "camera", rho=0.9)
    assert scores["score"].tolist() == pytest.approx([0.1 * 10 + 0.9 * 2, 1.0])
    assert routed_scores(scores)[["layer", "expert", "atom"]].values.tolist() == [[1, 0, 0]]
    with pytest.raises(UserError, match="the profile has no atom statistics .* re-run `superexperts profile`"):
        atom_scores(type("P", (), {})(), "camera")
    with pytest.raises(UserError, match="--rho 1.5 must be in"):
        atom_scores(prof, "camera", rho=1.5)
