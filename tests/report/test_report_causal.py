"""The causal section, the caveats of the sinks section, the router view at the firing token, and
the page layout (wide tables scroll, section titles unique). Inputs are hand-built JSON files."""

from __future__ import annotations

import html
import re

from report_helpers import HOSTILE, parse_page
from superexperts.report import write_report
from superexperts.report.page import CSS
from superexperts.runs.runfolder import atomic_write_json

LAYERS = 6


def _candidate(layer, expert, rank, *, causal, channel=9, removed=400.0, drops=None, reason="r"):
    drops = drops if drops is not None else [0.0] * layer + [1.0] * (LAYERS - layer)
    original = [1.0] * layer + [500.0] * (LAYERS - layer)
    return {
        "rank": rank,
        "layer": layer,
        "expert": expert,
        "causal": causal,
        "meaningful": True,
        "causal_layers": list(range(layer, LAYERS)) if causal else [],
        "channel": channel,
        "removed": removed,
        "own_original": 500.0,
        "own_ablated": 100.0,
        "own_drop": 0.8,
        "loss_delta": 0.5,
        "reason": reason,
        "channel_original": original,
        "channel_ablated": [o * (1 - d) for o, d in zip(original, drops)],
        "channel_drop": drops,
        "max_original": [9000.0] * LAYERS,
        "ma_drop": 0.0,
    }


def _causal_block():
    idle = {
        "rank": 3,
        "layer": 2,
        "expert": 7,
        "causal": False,
        "meaningful": False,
        "causal_layers": [],
        "channel": None,
        "removed": 0.0,
        "loss_delta": 0.0,
        "reason": "no effect at its own layer",
        "channel_drop": None,
        "channel_original": None,
        "channel_ablated": None,
    }
    late = _candidate(5, 2, 2, causal=False, channel=20, removed=8900.0, reason=HOSTILE)
    return {
        "threshold": 0.5,
        "samples": 2,
        "definition": "causal = ...",
        "caveats": ["2:7 had no effect"],
        "candidates": [_candidate(2, 5, 1, causal=True), late, idle],
    }


def test_causal_section_shows_verdicts_figure_and_every_layer(hand_run):
    atomic_write_json(hand_run / "prune_eval.json", {"conditions": [], "causal": _causal_block()})
    page = write_report(hand_run).read_text()
    parsed = parse_page(page)
    rows = parsed.tables["causal"]
    header = rows[0]
    verdicts = {r[1]: r for r in rows[1:4]}
    assert verdicts["2:5"][header.index("causal layers")] == "2-5"
    assert verdicts["2:5"][header.index("Super Expert (this run)")].endswith("yes")  # 2:5 is a planted SE
    assert verdicts["5:2"][header.index("causal layers")] == "none"
    assert (
        verdicts["2:5"][header.index("peak |h| at its layer: original -> ablated (drop)")]
        == "500 -> 100 (-80%)"
    )
    assert verdicts["2:7"][header.index("causal")].startswith("not meaningful")
    assert parsed.highlighted["causal"][1:4] == [True, False, False]
    per_layer = rows[4:]  # the folded table: one row per layer, one column per measured candidate
    assert [r[0] for r in per_layer[1:]] == [str(layer) for layer in range(LAYERS)]
    assert per_layer[1 + 5][3] == "500 -> 0"  # 5:2 at its own layer
    assert '<p class="warn">2:7 had no effect</p>' in page
    assert html.escape(HOSTILE) in page and "<script" not in page
    assert (hand_run / "figures" / "causal.png").stat().st_size > 0


def test_causal_section_of_an_old_file_says_why_it_can_mislead(hand_run):
    old = {
        "rank": 1,
        "layer": 2,
        "expert": 5,
        "ma_original": 9000.0,
        "ma_ablated": 9000.0,
        "ma_drop": 0.0,
        "loss_delta": 0.1,
        "causal": False,
    }
    atomic_write_json(hand_run / "prune_eval.json", {"conditions": [], "causal": {"candidates": [old]}})
    page = write_report(hand_run, figures=False).read_text()
    assert "predates the per-layer check" in page
    assert parse_page(page).tables["causal"][1][:2] == ["1", "2:5"]


def _sinks(original_rate: float, router: list[dict] | None = None, caveats=None) -> dict:
    conditions = [
        {"name": "original", "experts": [], "sink_mass": [0.01, 0.02], "sink_rate": original_rate},
        {
            "name": "super",
            "experts": [{"layer": 1, "expert": 3}],
            "sink_mass": [0.01, 0.03],
            "sink_rate": 0.0,
            "d_sink": [0.0, -3.3],
        },
    ]
    body = {"conditions": conditions, "epsilon": 0.3, "router": router or []}
    return body | ({"caveats": caveats} if caveats is not None else {})


def test_d_sink_without_a_sink_is_never_shown_as_a_number(hand_run):
    atomic_write_json(hand_run / "sinks.json", _sinks(0.0))  # an older file: no caveats stored
    page = write_report(hand_run, figures=False).read_text()
    rows = parse_page(page).tables["sinks"]
    assert rows[2][4] == "not meaningful" and "-3.3" not in page
    assert re.search(
        r'class="warn">Not meaningful here - d_sink: the original model has no first-token sink', page
    )
    atomic_write_json(hand_run / "sinks.json", _sinks(0.5, caveats=[]))
    rows = parse_page(write_report(hand_run, figures=False).read_text()).tables["sinks"]
    assert rows[2][4] == "-1.65"  # a sink exists: the mean of 0.0 and -3.3 is shown


def test_router_view_names_the_token_where_each_se_fires(hand_run):
    router = [
        {
            "layer": 1,
            "expert": 3,
            "scoring": "softmax",
            "fire_sample": 1,
            "fire_position": 4,
            "fire_token": ",",
            "fire_output": 300.0,
            "fire_score": 0.9,
            "fire_selected": 1.0,
            "sink_score": 0.01,
            "sink_selected": 0.0,
            "other_mean": 0.02,
            "other_max": 0.1,
        },
        {
            "layer": 2,
            "expert": 5,
            "scoring": "sigmoid",
            "fire_sample": -1,
            "fire_position": -1,
            "fire_token": "",
            "fire_output": "nan",
            "fire_score": "nan",
            "fire_selected": "nan",
            "sink_score": 0.5,
            "sink_selected": "nan",
            "other_mean": 0.1,
            "other_max": 0.2,
        },
    ]
    atomic_write_json(hand_run / "sinks.json", _sinks(0.5, router, caveats=[]))
    rows = parse_page(write_report(hand_run, figures=False).read_text()).tables["sinks"]
    fired, idle = rows[-2], rows[-1]
    assert fired[:5] == ["1:3", "softmax", 'sample 1, position 4: ","', "300", "0.9"]
    assert idle[2] == "nowhere on this input" and idle[4] == "n/a" and idle[7] == "n/a"


def test_streamed_sinks_say_the_router_view_was_not_measured(hand_run):
    from superexperts.evaluate.sinks.study import ROUTER_NOT_STREAMED

    atomic_write_json(hand_run / "sinks.json", _sinks(0.5, caveats=[]) | {"router": None,
                                                                         "not_measured": [ROUTER_NOT_STREAMED]})
    page = write_report(hand_run, figures=False).read_text()
    assert "router view: not measured with --stream" in page
    atomic_write_json(hand_run / "sinks.json", _sinks(0.5, caveats=[]))  # in memory, no router rows: no note
    assert "not measured with --stream" not in write_report(hand_run, figures=False).read_text()


def test_tables_scroll_in_their_box_and_titles_are_unique(full_report):
    _, page = full_report
    tags = parse_page(page).tags
    tables = [i for i, (tag, _) in enumerate(tags) if tag == "table"]
    assert tables and all(tags[i - 1] == ("div", {"class": "scroll"}) for i in tables)
    assert re.search(r"\.scroll\s*\{[^}]*overflow-x:\s*auto", CSS)
    titles = re.findall(r"<h[23]>(.*?)</h[23]>", page)
    assert len(titles) == len(set(titles)), [t for t in titles if titles.count(t) > 1]
