"""audit end to end: exported demo checkpoints with an SE / a non-SE zeroed, other architectures refused."""

from __future__ import annotations

import json

import pytest

import families
from file_trees import odd_layers_on_disk
from superexperts.capture.data import calibration
from superexperts.capture.profile import profile
from superexperts.cli import main
from superexperts.models.checkpoints.export import export_pruned
from superexperts.models.demo import DEMO_SUPER_EXPERTS, build_demo

FAST = ["--seq-len", "32", "--samples", "2", "--max-windows", "2", "--device", "cpu"]


@pytest.fixture(scope="module")
def exports(demo_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("audit")
    export_pruned(demo_dir, [DEMO_SUPER_EXPERTS[0]], root / "no-se")
    export_pruned(demo_dir, [(3, 5)], root / "no-other")
    return root


def test_zeroed_super_expert_is_damaged(demo_dir, exports, tmp_path, capsys):
    out = tmp_path / "a"
    assert main(["audit", str(demo_dir), str(exports / "no-se"), *FAST, "--out", str(out)]) == 1  # exit 1: damaged (gates CI)
    doc = json.loads((out / "audit.json").read_text())
    assert doc["verdict"] == "damaged"
    layer, expert = DEMO_SUPER_EXPERTS[0]
    assert any(r.startswith(f"L{layer} E{expert}: max output fell 100%") for r in doc["reasons"])
    # "before" is the original as profiled in memory on the same windows (an independent load path)
    model, tokenizer = build_demo()
    prof = profile(model, calibration(None, tokenizer, seq_len=32, samples=2).input_ids)
    values = {(int(r.layer), int(r.expert)): r.max_abs_output for r in prof.expert_stats.itertuples()}
    rows = {(r["layer"], r["expert"]): r for r in doc["super_experts"]}
    assert set(rows) == set(DEMO_SUPER_EXPERTS)
    for key, row in rows.items():
        assert row["max_abs_output_before"] == pytest.approx(values[key], rel=1e-5) and row["damaged"]
    assert rows[DEMO_SUPER_EXPERTS[0]]["max_abs_output_after"] == 0.0
    assert len(doc["layers"]) == 8 and doc["perplexity"]["before"] > 0 and doc["command"] == "audit"
    page = (out / "audit.html").read_text()
    assert "DAMAGED" in page and (out / "figures" / "audit.png").is_file()
    assert "verdict: DAMAGED" in capsys.readouterr().out
    assert main(["audit", str(demo_dir), str(exports / "no-se"), *FAST, "--out", str(out)]) == 2  # no overwrite


def test_zeroed_other_expert_is_intact(demo_dir, exports, tmp_path):
    out = tmp_path / "a"
    assert main(["audit", str(demo_dir), str(exports / "no-other"), *FAST, "--out", str(out)]) == 0
    doc = json.loads((out / "audit.json").read_text())
    assert doc["verdict"] == "intact" and doc["reasons"] == []
    assert all(r["max_abs_output_after"] == pytest.approx(r["max_abs_output_before"], rel=1e-3)
               for r in doc["super_experts"])  # fmt: skip


def test_other_architecture_refused_before_loading(demo_dir, tmp_path, capsys, monkeypatch):
    from superexperts.models import loading  # every recipe loads through ModelFields.load, which calls it

    other = tmp_path / "mixtral"
    families.build("mixtral").save_pretrained(other)
    capsys.readouterr()  # transformers' save progress bar
    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("weights were loaded"))
    out = tmp_path / "a"
    assert main(["audit", str(demo_dir), str(other), *FAST, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "not the same architecture" in err and "model_type 'mixtral'" in err and err.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize("extra, message", [
    (["--threshold", "1.5"], "--threshold 1.5"),
    (["--samples", "0"], "--samples must be >= 1"),
    (["--from", "no/such/run"], "not found"),
])  # fmt: skip
def test_bad_input_writes_nothing(demo_dir, exports, tmp_path, capsys, extra, message):
    out = tmp_path / "a"
    assert main(["audit", str(demo_dir), str(exports / "no-se"), *FAST, "--out", str(out), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_run_folder_of_another_model_refused(demo_dir, exports, tmp_path, capsys, monkeypatch):
    from superexperts.models import loading  # every recipe loads through ModelFields.load, which calls it

    run = tmp_path / "run"
    run.mkdir()
    (run / "super_experts.json").write_text(json.dumps({"super_experts": [{"layer": 9, "expert": 0}]}))
    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("weights were loaded"))
    out = tmp_path / "a"
    assert main(["audit", str(demo_dir), str(exports / "no-se"), "--from", str(run), *FAST, "--out", str(out)]) == 2
    assert "layer 9 is out of range" in capsys.readouterr().err and not out.exists()


def test_device_map_gives_the_in_memory_audit(demo_dir, exports, tmp_path):
    """--device-map FILE (odd layers offloaded to disk) for both checkpoints: the in-memory figures."""
    docs = {}
    for name, extra in [("mem", FAST), ("map", [*FAST[:-2], "--device-map",
                                               str(odd_layers_on_disk(demo_dir, tmp_path / "map.json"))])]:
        assert main(["audit", str(demo_dir), str(exports / "no-se"), *extra, "--out", str(tmp_path / name)]) == 1  # damaged
        docs[name] = json.loads((tmp_path / name / "audit.json").read_text())
    assert docs["map"]["verdict"] == docs["mem"]["verdict"] == "damaged"
    for got, want in zip(docs["map"]["super_experts"], docs["mem"]["super_experts"], strict=True):
        assert got["layer"] == want["layer"] and got["expert"] == want["expert"]
        for key in ("max_abs_output_before", "max_abs_output_after", "massive_before", "massive_after"):
            assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-9), key
    ppl = docs["map"]["perplexity"], docs["mem"]["perplexity"]
    assert ppl[0]["before"] == pytest.approx(ppl[1]["before"], rel=1e-5)
    assert ppl[0]["after"] == pytest.approx(ppl[1]["after"], rel=1e-5)


def test_the_demo_by_name_exports_and_audits_as_synthetic(tmp_path, capsys):
    """`export demo` and `audit demo ...` (a pip user's path): the copy keeps the synthetic label, and
    perplexity is the demo's held-out text in BOS-first windows, named in audit.json and audit.html."""
    pruned, out = tmp_path / "pruned", tmp_path / "audit"
    layer, expert = DEMO_SUPER_EXPERTS[0]
    assert main(["export", "demo", "--experts", f"{layer}:{expert}", "--out", str(pruned)]) == 0
    assert json.loads((pruned / "config.json").read_text())["superexperts_synthetic_demo"] is True
    capsys.readouterr()
    assert main(["audit", "demo", str(pruned), *FAST, "--out", str(out)]) == 1
    assert "SYNTHETIC" in capsys.readouterr().out
    doc = json.loads((out / "audit.json").read_text())
    assert doc["synthetic"] is True and doc["verdict"] == "damaged"
    assert doc["data"]["perplexity"]["spec"] == "demo-heldout"
    html = (out / "audit.html").read_text()
    assert "SYNTHETIC DEMO MODEL" in html and "Perplexity on demo-heldout" in html
