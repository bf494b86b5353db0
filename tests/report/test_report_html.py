"""report.html: escaping, the tables read back against the hand-built profile, optional sections,
bad run folders leaving nothing behind."""

from __future__ import annotations

import html
import json

import numpy as np
import pytest

import families  # tests/families.py, on sys.path through tests/conftest.py
from report_helpers import HOSTILE, HOSTILE_NAME, NUM_LAYERS, PLANTED, QUOTES, parse_page
from superexperts import report
from superexperts.capture.profile import profile
from superexperts.identify.profile_run import save_run
from superexperts.identify.rules import paper
from superexperts.report import eval_sections, load_inputs, sections, write_report
from superexperts.report.page import Section
from superexperts.runs.errors import UserError
from superexperts.runs.runfolder import atomic_write_json


def _expert(layer: int, kind: str, expert: int) -> str:
    return str(expert) if kind == "routed" else kind


def test_data_text_is_escaped(full_report):
    _, page = full_report
    assert "<script" not in page.lower()  # the page has no scripts, so any would come from data
    assert "<img src=x" not in page
    assert html.escape(HOSTILE) in page
    assert html.escape(json.dumps(QUOTES, ensure_ascii=False)) in page  # token text shown as a literal
    assert html.escape(HOSTILE_NAME) in page  # condition names from prune_eval.json / sinks.json


def test_page_loads_nothing_from_outside(full_report):
    tags = parse_page(full_report[1]).tags
    images = [attrs["src"] for tag, attrs in tags if tag == "img"]
    assert len(images) == 6  # 4 profile figures + perplexity + sinks, all inlined
    assert all(src.startswith("data:image/png;base64,") for src in images)
    links = [attrs["href"] for tag, attrs in tags if tag == "a"]
    files = [href for href in links if not href.startswith("#")]  # the run's own data files, relative
    assert links and files and all((full_report[0] / href).is_file() for href in files)
    assert not [tag for tag, _ in tags if tag in ("script", "link", "iframe", "object")]


def test_se_table_lists_the_planted_experts(full_report):
    rows = parse_page(full_report[1]).tables["super-experts"]
    planted = sorted(PLANTED.items(), key=lambda item: -item[1])
    assert [r[:3] for r in rows[1:]] == [[str(layer), _expert(layer, kind, e), f"{v:g}"]
                                         for (layer, kind, e), v in planted]  # fmt: skip
    assert all(r[5] == json.dumps(HOSTILE) for r in rows[1:])  # token text, read back unescaped


def test_candidate_table_checks_each_threshold(full_report, hand_profile):
    parsed = parse_page(full_report[1])
    header, *rows = parsed.tables["candidates"]
    table = hand_profile.expert_stats
    judged = table[(table.layer < round(0.75 * NUM_LAYERS)) & (table.kind != "dense")]
    ranked = sorted(judged.itertuples(), key=lambda r: -r.max_abs_output)[:10]
    p_value = np.percentile(judged.max_abs_output, 99.5)
    max_value = judged.max_abs_output.max() // 10
    assert header[6].startswith("> P99.5") and header[7].startswith("> max x 0.1")
    for row, r in zip(rows, ranked, strict=True):
        assert row[1:4] == [str(r.layer), _expert(r.layer, r.kind, r.expert), f"{r.max_abs_output:.4g}"]
        assert row[6].endswith("yes") == (r.max_abs_output > p_value)
        assert row[7].endswith("yes") == (r.max_abs_output > max_value)
    assert parsed.highlighted["candidates"][1:] == [(r.layer, r.kind, r.expert) in PLANTED for r in ranked]


def test_massive_table_has_one_row_per_layer(full_report, hand_profile):
    parsed = parse_page(full_report[1])
    rows = parsed.tables["massive-activations"][1:]
    assert [int(r[0]) for r in rows] == list(range(NUM_LAYERS))
    assert [float(r[1]) for r in rows] == pytest.approx(hand_profile.layer_stats.top1_abs.tolist(), rel=1e-3)
    se_layers = {layer for layer, _, _ in PLANTED}
    assert parsed.highlighted["massive-activations"][1:] == [
        layer in se_layers for layer in range(NUM_LAYERS)
    ]


def test_all_sections_and_figure_files(full_report):
    run, page = full_report
    ids = [attrs.get("id") for tag, attrs in parse_page(page).tags if tag == "section"]
    assert ids == ["synthetic", "intro", "answer", "glance", "metadata", "super-experts", "candidates", "figures",
                   "sensitivity", "massive-activations", "prune-eval", "sinks", "files"]  # fmt: skip
    assert "SYNTHETIC DEMO MODEL" in page
    names = {"heatmap", "experts", "massive", "distribution", "perplexity", "sinks"}
    assert {p.name for p in (run / "figures").iterdir()} == {
        f"{n}.{ext}" for n in names for ext in ("png", "svg")
    }


def test_sensitivity_grid_is_read_from_its_file(full_report):
    run, page = full_report
    saved = json.loads((run / "sensitivity.json").read_text())
    rows = parse_page(page).tables["sensitivity"]
    cells = [cell for row in rows[1:] for cell in row[1:]]
    expected = []
    for c in sorted(saved["cells"], key=lambda c: (c["percentile"], c["max_fraction"])):
        experts = ", ".join(f"{e['layer']}:{e['expert']}" for e in c["super_experts"])
        expected.append(f"{c['count']}: {experts or 'none'}")
    assert cells == expected
    assert html.escape(saved["verdict"]) in page


def test_a_grid_capped_by_its_percentile_says_so(hand_run):
    """Sensitivity unstable only because P99.9 of 384 experts selects at most 1: the row says it is capped
    and the verdict is a note, not a warning about the data."""
    from expert_tables import background, expert_table
    from superexperts.identify.sensitivity import sensitivity, sensitivity_json

    values = background(8, 64, seed=2)
    values[1, 5], values[2, 6] = 900.0, 700.0
    atomic_write_json(hand_run / "sensitivity.json", sensitivity_json(sensitivity(expert_table(values), 8)))
    section = eval_sections.sensitivity(load_inputs(hand_run))
    assert "P99.9 (selects at most 1 of 384: capped)" in section.body
    assert '<p class="note">unstable, but only from the percentile&#x27;s cap, not from the data' in section.body
    assert "P99.5 (" not in section.body  # P99.5 of 384 can select 2, as many as the paper cell found


def test_optional_sections_are_left_out_without_their_files(hand_run):
    inputs = load_inputs(hand_run)
    builders = (eval_sections.sensitivity, eval_sections.prune_eval, eval_sections.sinks)
    assert [build(inputs) for build in builders] == [None, None, None]
    assert sections.synthetic_banner(inputs) is None  # meta has no synthetic flag


def test_damaged_optional_file_shows_its_error(hand_run):
    (hand_run / "sinks.json").write_text("{not json")
    section = eval_sections.sinks(load_inputs(hand_run))
    assert section is not None and "damaged" in section.body and 'class="warn"' in section.body


def test_report_shows_the_saved_verdict_not_a_recomputed_one(hand_run, hand_profile):
    saved = json.loads((hand_run / "super_experts.json").read_text())
    saved["super_experts"] = saved["super_experts"][:1]  # e.g. written by `identify` with another rule
    atomic_write_json(hand_run / "super_experts.json", saved)
    assert load_inputs(hand_run).verdict.experts == [(2, 5)]


def test_missing_verdict_file_is_reidentified_with_a_note(hand_run):
    (hand_run / "super_experts.json").unlink()
    inputs = load_inputs(hand_run)
    assert sorted(inputs.verdict.experts, key=str) == sorted([(2, 5), (3, "shared"), (4, 9)], key=str)
    assert "re-identified" in sections.answer(inputs).body


@pytest.mark.parametrize("damage", ["no folder", "no profile", "damaged profile", "foreign experts"])
def test_bad_run_folder_writes_nothing(tmp_path, hand_run, damage):
    target = hand_run
    if damage == "no folder":
        target = tmp_path / "missing"
    elif damage == "no profile":
        (hand_run / "profile.json").unlink()
    elif damage == "damaged profile":
        (hand_run / "profile.json").write_text('{"format": "superexperts.profile/1", "meta": ')
    else:
        saved = json.loads((hand_run / "super_experts.json").read_text())
        saved["super_experts"].append({"layer": 99, "expert": 1})
        atomic_write_json(hand_run / "super_experts.json", saved)
    if target.exists():
        (target / "report.html").write_text("previous report")
    before = sorted(p.name for p in target.rglob("*")) if target.exists() else None
    with pytest.raises(UserError) as error:
        write_report(target)
    assert "\n" not in str(error.value)
    assert (sorted(p.name for p in target.rglob("*")) if target.exists() else None) == before
    if target.exists():
        assert (target / "report.html").read_text() == "previous report"


def test_a_module_can_add_a_section(hand_run, monkeypatch):
    def hostile_section(inputs):
        return Section("extra", "Extra <b>", sections.paragraphs(HOSTILE))

    monkeypatch.setattr(report, "SECTIONS", [sections.intro, hostile_section])
    page = write_report(hand_run, figures=False).read_text()
    assert 'id="extra"' in page and "Extra &lt;b&gt;" in page and html.escape(HOSTILE) in page
    assert not (hand_run / "figures").exists()


def test_report_of_a_real_tiny_model(tmp_path):
    """deepseek_v2: a dense first layer and shared experts, through profile -> save_run -> report."""
    prof = profile(families.build("deepseek_v2"), families.random_ids(samples=2, seq_len=12))
    verdict = paper(prof.expert_stats, prof.num_layers)
    save_run(tmp_path, prof, verdict)
    parsed = parse_page(write_report(tmp_path, figures=False).read_text())
    se_rows = parsed.tables.get("super-experts", [])
    expected = [
        [str(r.layer), _expert(r.layer, r.kind, r.expert)] for r in verdict.super_experts.itertuples()
    ]
    assert [r[:2] for r in se_rows[1:]] == expected
    inside = 1 if len(expected) else 0  # "Inside each Super Expert": the atoms of the SEs found
    assert len([t for t, a in parsed.tags if t == "img"]) == 4 + inside


def test_answer_says_whether_the_published_ses_were_found(hand_run):
    from superexperts.identify import known

    inputs = load_inputs(hand_run)
    agreement = known.agreement(inputs.verdict, known.get("Qwen3-30B-A3B"))
    saved = json.loads((hand_run / "super_experts.json").read_text()) | {"known": agreement}
    atomic_write_json(hand_run / "super_experts.json", saved)
    body = sections.answer(load_inputs(hand_run)).body
    assert agreement["agrees"] is False  # the hand-built SEs are not Qwen3's 1:68, 2:92, 3:82
    assert html.escape(known.agreement_line(agreement)) in body


def test_overflowed_values_are_read_back_as_numbers(tmp_path, hand_profile):
    """profile.json stores inf as the string "inf"; the report still sorts and draws it."""
    hand_profile.expert_stats.loc[100, "max_abs_output"] = float("inf")
    hand_profile.layer_stats.loc[5, "top1_abs"] = float("inf")
    save_run(tmp_path, hand_profile, paper(hand_profile.expert_stats, hand_profile.num_layers))
    assert '"max_abs_output": "inf"' in (tmp_path / "profile.json").read_text()
    parsed = parse_page(write_report(tmp_path, figures=False).read_text())
    row = hand_profile.expert_stats.loc[100]
    assert parsed.tables["candidates"][1][1:4] == [str(row.layer), str(row.expert), "inf"]
    assert parsed.tables["massive-activations"][6][1] == "inf"


def test_pruning_table_shows_the_headline_generation_metrics_and_folds_the_rest(hand_run):
    metrics = {"tokens": 32, "distinct_1": 0.5, "distinct_2": 0.25, "longest_run": 9, "loop_fraction": 0.75}
    conditions = [{"name": "original", "experts": [], "mode": "zero", "perplexity": 11.6,
                   "generation_metrics": metrics},
                  {"name": "super", "experts": [{"layer": 1, "expert": 13}], "mode": "zero", "perplexity": 54.2,
                   "generation_metrics": {k: v * 2 for k, v in metrics.items()}}]  # fmt: skip
    atomic_write_json(hand_run / "prune_eval.json", {"conditions": conditions})
    body = eval_sections.prune_eval(load_inputs(hand_run)).body
    rows = parse_page(f'<section id="p">{body}</section>').tables["p"]  # both tables' rows, in order
    assert rows[0] == ["condition", "experts pruned", "mode", "perplexity", "x original", "against the random controls",
                       "generation loop_fraction", "generation distinct_2"]  # fmt: skip
    assert rows[2][4:6] == ["4.67x", "no spread (fewer than 2 random seeds): not judged"]
    assert [float(v) for v in rows[2][6:]] == [1.5, 0.5]
    assert rows[3] == ["condition", *metrics]  # the folded table: every metric
    assert [float(v) for v in rows[5][1:]] == [v * 2 for v in metrics.values()]
    assert body.index("<details>") < body.index("<th>tokens</th>")
