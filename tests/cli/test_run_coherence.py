"""A run folder is one study: every result records the SEs and profile it rests on, a change of the
SE set marks each dependent report section stale, and an overwriting profile leaves only its own files.

One demo run (profile, prune-eval, sinks, quant-eval at tiny settings) is shared by the tests here.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest

from superexperts.cli import main
from superexperts.runs.runfolder import RESULT_FILES, RUN_FILE_PATTERNS

SMALL = ["--max-windows", "2"]
STEPS = [
    ["prune-eval", "--from", "{run}", "--causal", "1", *SMALL],
    ["sinks", "--from", "{run}", "--random", "0", "--samples", "1"],
    ["quant-eval", "--from", "{run}", "--samples", "2", *SMALL],
]
# report section id -> the result file it shows
SECTIONS = {"prune-eval": "prune_eval.json", "causal": "prune_eval.json", "protection": "quant_eval.json",
            "sinks": "sinks.json"}  # fmt: skip


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("coherence") / "run"
    assert main(["profile", "--out", str(run)]) == 0
    for step in STEPS:
        assert main([a.format(run=run) for a in step]) == 0, step
    return run


@pytest.fixture
def run(study, tmp_path) -> Path:
    return Path(shutil.copytree(study, tmp_path / "run"))


def _labels(run: Path) -> list[str]:
    return [f"{e['layer']}:{e['expert']}" for e in json.loads((run / "super_experts.json").read_text())["super_experts"]]


def _section(html: str, section_id: str) -> str:
    match = re.search(rf'<section id="{section_id}">(.*?)</section>', html, re.DOTALL)
    assert match, f"section {section_id} missing"
    return match.group(1)


def test_every_written_file_is_in_the_one_list(study):
    written = [p.relative_to(study).as_posix() for p in study.rglob("*") if p.is_file()]
    assert written
    assert [n for n in written if not any(fnmatch.fnmatch(n, pat) for pat in RUN_FILE_PATTERNS)] == []


def test_results_record_the_ses_profile_and_command_line(study):
    profile_hash = hashlib.sha256((study / "profile.json").read_bytes()).hexdigest()
    profile_meta = json.loads((study / "profile.json").read_text())["meta"]
    model = {"model_path": profile_meta["model_path"], "fingerprint": profile_meta["fingerprint"]}
    assert set(model["fingerprint"]) == {"config", "weights"}  # the built-in demo's too
    for f in RESULT_FILES:
        document = json.loads((study / f.name).read_text())
        assert document["computed_for"] == {"super_experts": _labels(study), "profile_sha256": profile_hash,
                                            "model": model}  # fmt: skip
        assert document["command_line"][:2] == ["superexperts", f.command]
    assert profile_meta["command_line"] == ["superexperts", "profile", "--out", str(study)]


def test_sinks_adds_its_section_to_the_report(study):
    html = (study / "report.html").read_text()
    for section_id in SECTIONS:
        assert "Stale:" not in _section(html, section_id)


def test_a_new_se_set_marks_every_dependent_section_stale(run, capsys):
    before = _labels(run)
    assert main(["identify", "--from", str(run), "--criterion", "quantile"]) == 0
    after = _labels(run)
    assert after != before  # the test needs a rule that changes the set
    out = capsys.readouterr().out
    html = (run / "report.html").read_text()
    expected = f"computed for SEs {', '.join(before)}, now {', '.join(after) or 'none'}"
    for section_id, name in SECTIONS.items():
        body = _section(html, section_id)
        assert "(stale)" in body.split("</h2>")[0] and expected in body, section_id
        assert f"superexperts {'prune-eval' if name == 'prune_eval.json' else name[:-5].replace('_', '-')}" in body
    for f in RESULT_FILES:
        assert f"stale: {f.name}: {expected}" in out
    # back to the rule the results were computed for: nothing is stale any more
    assert main(["identify", "--from", str(run)]) == 0
    assert "Stale:" not in (run / "report.html").read_text()


def test_a_changed_profile_marks_results_stale_even_with_the_same_ses(run):
    data = json.loads((run / "profile.json").read_text())
    data["meta"]["note"] = "re-profiled elsewhere"
    (run / "profile.json").write_text(json.dumps(data))
    assert main(["report", "--from", str(run)]) == 0
    html = (run / "report.html").read_text()
    for section_id in SECTIONS:
        assert "computed for another profile.json" in _section(html, section_id)


def test_results_of_another_model_are_left_out(study, tmp_path, capsys):
    """A result copied in from a run of another model is not shown as this run's: one line instead."""
    from catalogue_workspace import PROFILE_ARGS

    import families

    families.build("qwen3_moe").save_pretrained(tmp_path / "q")
    families.char_tokenizer().save_pretrained(tmp_path / "q")
    run = tmp_path / "qrun"
    assert main(["profile", str(tmp_path / "q"), "--out", str(run), *PROFILE_ARGS]) == 0
    for f in RESULT_FILES:
        shutil.copy(study / f.name, run / f.name)
    capsys.readouterr()
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    html = (run / "report.html").read_text()
    demo = json.loads((study / "profile.json").read_text())["meta"]["model_path"]
    for section_id in SECTIONS:
        body = _section(html, section_id)
        assert "(left out: another model)" in body.split("</h2>")[0], section_id
        assert f"computed on another model ({demo}, config fingerprint" in body and str(tmp_path / "q") in body
        assert "<table" not in body and "<img" not in body, section_id  # the banner alone, no numbers
    assert not list((run / "figures").glob("sinks_*"))
    for f in RESULT_FILES:
        assert f"stale: {f.name}: computed on another model" in out
        assert f"superexperts {f.command} --from {run} --overwrite" in out  # not the other run's command line


def test_profile_overwrite_removes_every_result(run):
    assert main(["profile", "--out", str(run), "--overwrite", "--criterion", "quantile"]) == 0
    for f in RESULT_FILES:
        assert not (run / f.name).exists(), f.name
    html = (run / "report.html").read_text()
    for section_id in SECTIONS:
        assert f'<section id="{section_id}">' not in html
    assert not list(run.glob("sinks_*"))


def test_the_report_shows_what_each_number_rests_on(study):
    import base64

    html = (study / "report.html").read_text()
    sinks = _section(html, "sinks")
    for name in ("sinks_chain", "sinks_maps"):  # written by `sinks`, shown on the page
        assert base64.b64encode((study / f"{name}.png").read_bytes()).decode() in sinks
    prune = _section(html, "prune-eval")
    assert "Rests on: perplexity on" in prune and "superexperts prune-eval --from" in prune
    # the planted late candidate passes both thresholds and is excluded by the layer rule alone
    assert re.search(r"<td>7</td><td>22</td>.*?no: layer 7 is not judged \(layer rule\)", _section(html, "candidates"))
    experts = json.loads((study / "profile.json").read_text())["expert_stats"]
    routed = [e for e in experts if e["kind"] == "routed"]
    unrouted = sum(1 for e in routed if not e["tokens_routed"])
    assert f"{unrouted} of {len(routed)} routed experts received no calibration token" in html
    files = _section(html, "files")
    for f in RESULT_FILES:
        assert f'href="{f.name}"' in files


@pytest.fixture(scope="module")
def outside(tmp_path_factory) -> Path:
    """Results written outside any profile run (--out elsewhere, no --from): one folder per subcommand."""
    where = tmp_path_factory.mktemp("outside")
    for step in (["prune-eval", "--experts", "1:13", *SMALL], ["sinks", "--experts", "1:13", "--random", "0",
                 "--samples", "1"], ["quant-eval", "--samples", "2", *SMALL]):  # fmt: skip
        assert main([*step, "--out", str(where / step[0])]) == 0, step
    return where


def test_a_result_outside_a_run_records_its_experts_and_model(study, outside, capsys):
    fingerprint = json.loads((study / "profile.json").read_text())["meta"]["fingerprint"]
    assert fingerprint and set(fingerprint) == {"config", "weights"}  # the demo checkpoint's, as profiled
    for f in RESULT_FILES:
        command = f.command
        basis = json.loads((outside / command / f.name).read_text())["computed_for"]
        assert basis["profile_run"] is None and basis["profile_sha256"] is None, command
        # quant-eval without --from profiles now with the paper rule: the demo's SEs
        assert basis["super_experts"] == (_labels(study) if command == "quant-eval" else ["1:13"]), command
        assert basis["model"]["fingerprint"] == fingerprint and basis["model"]["model"] == "builtin demo"
    # the report says they rest on no profile run instead of rendering them
    assert main(["report", "--from", str(outside / "prune-eval")]) == 2
    err = capsys.readouterr().err
    assert "holds prune_eval.json but no profile.json: these results do not rest on a profile run" in err
    assert not (outside / "prune-eval" / "report.html").exists()


def test_the_console_says_a_result_rests_on_no_run(study, tmp_path, capsys):
    out = tmp_path / "elsewhere"
    assert main(["prune-eval", "--experts", "1:13", *SMALL, "--out", str(out)]) == 0
    assert (f"note: {out} is not a profile run: prune_eval.json does not rest on a profile run: it records the "
            "experts it was computed for (1:13) and the model's fingerprint") in capsys.readouterr().out
    assert main(["prune-eval", "--from", str(study), *SMALL, "--out", str(tmp_path / "from")]) == 0
    assert f"was computed for the SEs of the profile run {study}" in capsys.readouterr().out
    basis = json.loads((tmp_path / "from" / "prune_eval.json").read_text())["computed_for"]
    profile_hash = hashlib.sha256((study / "profile.json").read_bytes()).hexdigest()
    assert (basis["profile_run"], basis["profile_sha256"], basis["super_experts"]) == (str(study), profile_hash,
                                                                                       _labels(study))  # fmt: skip


def test_an_outside_result_copied_into_a_run_is_marked(run, outside):
    shutil.copy(outside / "prune-eval" / "prune_eval.json", run / "prune_eval.json")
    assert main(["report", "--from", str(run)]) == 0
    body = _section((run / "report.html").read_text(), "prune-eval")
    assert "(stale)" in body.split("</h2>")[0]
    assert ("it does not rest on a profile run (computed outside one, for experts 1:13; the run&#x27;s SEs: "
            f"{', '.join(_labels(run))})") in body
