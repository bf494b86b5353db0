"""A metric that means nothing on the input says so in sinks.json, on the console and in the figure."""

from __future__ import annotations

import json

import pandas as pd

import families
from superexperts.capture.data import calibration
from superexperts.evaluate.sinks.caveats import router_caveats
from superexperts.evaluate.sinks.study import sinks_study, study_files, summary_lines
from superexperts.models.demo import DEMO_SUPER_EXPERTS, build_demo


def _study(model, ids, experts):
    return sinks_study(
        model, ids, super_experts=experts, controls={"random-0": [(2, 1)]}, map_layers=[2], map_heads=[0]
    )


def test_no_sink_marks_d_sink_not_meaningful_everywhere():
    study = _study(families.build("qwen3_moe"), families.random_ids(2, 16), [(1, 2)])
    assert study.result["original"].sink_rate() == 0.0  # a random tiny model has no first-token sink
    body = json.loads(study_files(study, {})["sinks.json"])
    assert [c["metric"] for c in body["caveats"]] == ["d_sink"] and body["caveats"][0]["try"]
    ablated = [c for c in body["conditions"] if "d_sink" in c]
    assert ablated and all(
        c["d_sink_meaningful"] is False and "no first-token sink" in c["d_sink_note"] for c in ablated
    )
    lines = summary_lines(study)
    d_sink_lines = [line for line in lines if "D_sink" in line and not line.startswith("WARNING")]
    assert d_sink_lines and all("mean D_sink n/a (not meaningful" in line for line in d_sink_lines)
    assert any(
        line.startswith("WARNING: d_sink: the original model has no first-token sink") for line in lines
    )
    assert "NOT MEANINGFUL" in study.figures["sinks_d_sink"].axes[0].get_title()


def test_a_real_sink_keeps_d_sink_and_says_nothing():
    model, tokenizer = build_demo()
    ids = calibration(None, tokenizer, seq_len=24, samples=1, seed=0).input_ids
    study = _study(model, ids, list(DEMO_SUPER_EXPERTS))
    body = json.loads(study_files(study, {})["sinks.json"])
    assert body["caveats"] == [] and body["warnings"] == []
    assert all(
        c["d_sink_meaningful"] is True and "d_sink_note" not in c for c in body["conditions"] if "d_sink" in c
    )
    assert any("; mean D_sink 0." in line for line in summary_lines(study))  # the SEs' D_sink, a number


def test_router_caveats_name_idle_experts_and_routers_without_top_k():
    router = pd.DataFrame(
        {
            "layer": [1, 2],
            "expert": [3, 5],
            "fire_position": [4, -1],
            "sink_selected": [float("nan"), float("nan")],
        }
    )
    notes = router_caveats(router)
    assert [n["metric"] for n in notes] == ["router fire_*", "router *_selected"]
    assert "2:5" in notes[0]["reason"] and "1:3" not in notes[0]["reason"]
    assert router_caveats(router.assign(fire_position=[0, 0], sink_selected=[1.0, 0.0])) == []
