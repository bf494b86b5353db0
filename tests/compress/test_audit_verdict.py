"""audit_verdict and damage: pure functions over hand-built profiles (no model)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from superexperts.capture.profile import EXPERT_COLUMNS, Profile
from superexperts.compress.audit import Measured, audit_verdict
from superexperts.compress.damage import fed_massive, retention, se_outputs, worst_retention

SES = [(1, 3), (2, "shared")]


def measured(se1: float, shared: float, massive: list[float], other: float = 5.0) -> Measured:
    rows = [{"layer": 1, "expert": 3, "kind": "routed", "max_abs_output": se1},
            {"layer": 1, "expert": 4, "kind": "routed", "max_abs_output": other},
            {"layer": 2, "expert": -1, "kind": "shared", "max_abs_output": shared}]  # fmt: skip
    experts = pd.DataFrame(rows, columns=EXPERT_COLUMNS)
    layers = pd.DataFrame({"layer": range(len(massive)), "top1_abs": massive})
    prof = Profile(experts, layers, {"num_layers": len(massive)})
    return Measured(prof, {"perplexity": 10.0}, [0.1] * len(massive), 0.5, {"model_path": "x"})


ORIGINAL = measured(300.0, 500.0, [1.0, 300.0, 800.0, 800.0])


def test_damage_tables():
    rows = se_outputs(ORIGINAL.profile.expert_stats, measured(150.0, 500.0, [1] * 4).profile.expert_stats, SES)
    assert [(r["layer"], r["expert"], r["max_abs_output_before"], r["max_abs_output_after"]) for r in rows] == [
        (1, 3, 300.0, 150.0), (2, "shared", 500.0, 500.0)]
    assert rows[0]["relative_change"] == pytest.approx(-0.5) and rows[1]["relative_change"] == 0.0
    assert retention([2.0, 0.0, 4.0], [1.0, 1.0, 4.0])[::2] == [0.5, 1.0]
    assert math.isnan(retention([0.0], [1.0])[0])
    assert fed_massive([1, 300, 800, 5], [1, 300, 10, 700], 2) == (800, 700)
    assert worst_retention([0.1, 0.9, float("nan"), 0.8], from_layer=1) == 0.8


@pytest.mark.parametrize(("after", "verdict", "reason"), [
    (measured(300.0, 500.0, [1.0, 300.0, 800.0, 800.0], other=0.0), "intact", None),  # a non-SE zeroed
    (measured(160.0, 500.0, [1.0, 160.0, 660.0, 660.0]), "intact", None),  # fell 47%: below the line
    (measured(140.0, 500.0, [1.0, 140.0, 640.0, 640.0]), "damaged", "L1 E3: max output fell 53%"),
    (measured(300.0, 500.0, [1.0, 300.0, 300.0, 300.0]), "damaged", "L2 shared: massive activation it feeds"),
    (measured(900.0, 900.0, [1.0, 900.0, 2000.0, 2000.0]), "intact", None),  # rises are not damage
])  # fmt: skip
def test_verdict(after, verdict, reason):
    doc = audit_verdict(ORIGINAL, after, SES)
    assert doc["verdict"] == verdict
    assert (reason is None) == (not doc["reasons"])
    if reason:
        assert any(r.startswith(reason) for r in doc["reasons"])
    assert any(r["damaged"] for r in doc["super_experts"]) == (verdict == "damaged")
    assert [layer["retention"] for layer in doc["layers"]] == retention([1.0, 300.0, 800.0, 800.0],
                                                                        [layer["massive_after"] for layer in doc["layers"]])


def test_stricter_threshold():
    after = measured(160.0, 500.0, [1.0, 160.0, 660.0, 660.0])
    assert audit_verdict(ORIGINAL, after, SES, threshold=0.3)["verdict"] == "damaged"
