"""The "What protection buys" section and the audit page, from hand-built files (no model)."""

from __future__ import annotations

import json

from report_helpers import HOSTILE, parse_page
from superexperts.report import build_sections, load_inputs, write_report
from superexperts.report.audit_page import audit_files
from superexperts.report.quant_sections import protection
from superexperts.runs.runfolder import atomic_write_json

SES = [{"layer": 2, "expert": 5}]


def condition(name: str, ppl: float, kept: float, protected=(), only=None, change: float = 0.0) -> dict:
    return {"name": name, "protected": list(protected), "quantized_only": only, "quantized_experts": 10,
            "perplexity": ppl, "massive_retention": [1.0, 1.0, kept, kept, kept],
            "super_experts": [{"layer": 2, "expert": 5, "relative_change": change}],
            "d_sink": None if name == "original" else [0.0, 0.1, 0.2, 0.1, 0.0], "sink_rate": 0.5,
            "tasks": {"arc_easy": {"acc": 0.5}}, "generations": [{"prompt": "Hi", "text": HOSTILE}]}  # fmt: skip


CONDITIONS = [condition("original", 8.0, 1.0, only=[]), condition("all", 9.5, 0.6, change=-0.4),
              condition("protect-super", 8.2, 0.99, SES), condition("protect-random-0", 9.4, 0.61, [{"layer": 1,
              "expert": 2}]), condition("protect-random-1", 9.6, 0.59, [{"layer": 3, "expert": 0}]),
              condition("se-only", 8.9, 0.62, only=SES, change=-0.4)]  # fmt: skip
SUMMARY = {"protect-random": {"perplexity": {"mean": 9.5, "std": 0.14, "min": 9.4, "max": 9.6, "n": 2},
                              "massive_retention": {"mean": [1, 1, 0.6, 0.6, 0.6], "min": [1, 1, 0.59, 0.59, 0.59],
                                                    "max": [1, 1, 0.61, 0.61, 0.61]}}}  # fmt: skip


def test_protection_section(hand_run):
    atomic_write_json(hand_run / "quant_eval.json", {"conditions": CONDITIONS, "summary": SUMMARY,
                                                      "scheme": {"bits": 4, "granularity": "output channel"}})
    page = parse_page((write_report(hand_run)).read_text())
    rows = page.tables["protection"]
    assert [r[0] for r in rows[1:7]] == [c["name"] for c in CONDITIONS]
    by = {r[0]: r for r in rows[1:7]}
    assert by["protect-super"][2] == "2:5" and by["se-only"][2] == "all others" and by["all"][2] == "none"
    assert by["original"][2] == "all" and by["protect-random-0"][3] == "9.4"
    assert by["all"][6] == "0.6" and by["all"][7] == "-40.0%"  # worst retention from the SE's layer on
    assert rows[0][4:6] == ["x original", "against the random protections"]
    original = float(by["original"][3])
    assert by["all"][4] == f"{float(by['all'][3]) / original:.3g}x" and by["original"][5] == ""
    assert any(r[:2] == ["protect-random", "2"] for r in rows)  # the control summary
    assert (hand_run / "figures" / "protection.png").is_file()
    assert not [t for t, _ in page.tags if t == "script"]  # the hostile generation stayed text


def test_section_absent_or_damaged(hand_run):
    assert protection(load_inputs(hand_run)) is None
    (hand_run / "quant_eval.json").write_text("{broken")
    section = protection(load_inputs(hand_run))
    assert section is not None and "damaged" in section.body
    assert any(s.id == "protection" for s in build_sections(load_inputs(hand_run)))


def test_audit_page_escapes_and_shows_the_verdict():
    doc = {"verdict": "damaged", "threshold": 0.5, "threshold_reason": HOSTILE,
           "reasons": [f"L2 E5: max output fell 100% (300 -> 0) {HOSTILE}"],
           "super_experts": [{"layer": 2, "expert": 5, "max_abs_output_before": 300.0, "max_abs_output_after": 0.0,
                              "relative_change": -1.0, "massive_before": 800.0, "massive_after": 2.0,
                              "massive_change": -0.9975, "damaged": True}],
           "layers": [{"layer": i, "massive_before": b, "massive_after": a, "retention": a / b,
                       "sink_mass_before": 0.9, "sink_mass_after": 0.1}
                      for i, (b, a) in enumerate([(1.0, 1.0), (300.0, 1.0), (800.0, 2.0)])],
           "perplexity": {"before": 8.0, "after": 60.0}, "sink_rate": {"before": 0.8, "after": 0.0},
           "original": {"model_path": HOSTILE}, "compressed": {"model_path": "c"}}  # fmt: skip
    files = audit_files(json.loads(json.dumps(doc)))
    html = files["audit.html"].decode()
    page = parse_page(html)
    assert "Verdict: DAMAGED" in html and not [t for t, _ in page.tags if t == "script"]
    assert page.tables["super-experts"][1][:4] == ["2:5", "300", "0", "-100.0%"] and page.highlighted["super-experts"][1]
    assert [r[3] for r in page.tables["layers"][1:]] == ["1", "0.003333", "0.0025"]
    assert {"figures/audit.png", "figures/audit.svg"} <= set(files)
