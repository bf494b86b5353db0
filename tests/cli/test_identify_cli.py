"""`superexperts identify --from RUN_DIR`: re-identification from a saved profile, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from expert_tables import background, expert_table, save_table_run, snapshot
from superexperts.cli import main
from superexperts.identify import rules

LAYERS = 8


@pytest.fixture
def run_dir(tmp_path):
    values = background(LAYERS, 64, seed=4)
    values[1, 3], values[2, 5], values[7, 0] = 800.0, 120.0, 3000.0  # late outlier: reap drops 2:5
    table = expert_table(values, shared={3: 0.5})
    folder = tmp_path / "run"
    save_table_run(folder, table, LAYERS, model_type="toy")
    return folder, table


def test_identify_rewrites_super_experts_and_sensitivity(run_dir, capsys):
    folder, table = run_dir
    exports = {name: (folder / name).read_bytes() for name in ("expert_stats.csv", "expert_stats.parquet")}
    assert main(["identify", "--from", str(folder), "--criterion", "reap-abs", "--param", "percentile=99"]) == 0

    saved = json.loads((folder / "super_experts.json").read_text())
    expected = rules.reap_abs(table, LAYERS, percentile=99.0)
    assert [(r["layer"], r["expert"]) for r in saved["super_experts"]] == expected.experts == [(1, 3)]
    assert saved["criterion"]["name"] == "reap-abs" and saved["criterion"]["percentile"] == 99.0
    assert saved["provenance"]["command"] == "identify" and saved["meta"]["model_type"] == "toy"
    grid = json.loads((folder / "sensitivity.json").read_text())
    assert grid["criterion"] == "reap-abs" and len(grid["cells"]) == 16
    assert {name: (folder / name).read_bytes() for name in exports} == exports  # kept as they were
    out = capsys.readouterr().out
    assert "1 Super Experts:" in out and "sensitivity (reap-abs rule" in out and "'<s>'" in out


def test_identify_include_layers_and_paper_default(run_dir):
    folder, table = run_dir
    assert main(["identify", "--from", str(folder), "--include-layers", "2,"]) == 0
    saved = json.loads((folder / "super_experts.json").read_text())
    assert saved["criterion"]["layers_judged"] == [2]
    assert [(r["layer"], r["expert"]) for r in saved["super_experts"]] == rules.paper(table, LAYERS,
                                                                                      include_layers=[2]).experts


def test_identify_recreates_missing_exports(run_dir):
    folder, table = run_dir
    (folder / "expert_stats.csv").unlink()
    (folder / "expert_stats.parquet").unlink()
    assert main(["identify", "--from", str(folder)]) == 0
    csv = pd.read_csv(folder / "expert_stats.csv")
    parquet = pd.read_parquet(folder / "expert_stats.parquet")
    assert len(csv) == len(parquet) == len(table)
    np.testing.assert_allclose(parquet["max_abs_output"], table["max_abs_output"])


def _damage(folder, how: str) -> None:
    path = folder / "profile.json"
    text = path.read_text()
    if how == "truncated":
        path.write_text(text[: len(text) // 2])
    elif how == "other-version":
        path.write_text(json.dumps(json.loads(text) | {"format": "superexperts.profile/0"}))
    elif how == "partial":
        data = json.loads(text)
        del data["expert_stats"]
        path.write_text(json.dumps(data))
    elif how == "missing":
        path.unlink()
    elif how in ("rows", "values"):
        data = json.loads(text)
        for record in data["expert_stats"][:3]:
            if how == "rows":
                del record["kind"]
            else:
                record["max_abs_output"] = "nan"
        path.write_text(json.dumps(data))


@pytest.mark.parametrize("how, message", [
    ("truncated", "damaged or partial JSON"),
    ("other-version", "this tool reads 'superexperts.profile/1'"),
    ("partial", "partial or damaged"),
    ("missing", "profile not found"),
    ("rows", "has missing values"),
    ("values", "non-numeric max_abs_output"),
])  # fmt: skip
def test_damaged_run_folder_is_one_line_error_and_nothing_is_overwritten(run_dir, capsys, how, message):
    folder, _ = run_dir
    _damage(folder, how)
    before = snapshot(folder)
    assert main(["identify", "--from", str(folder)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert snapshot(folder) == before


@pytest.mark.parametrize("argv, message", [
    (["--criterion", "papr"], "Unknown criterion 'papr'. Did you mean 'paper'?"),
    (["--param", "percentile=100"], "percentile=100.0 is out of range"),
    (["--param", "max_fraction=0"], "max_fraction=0.0 is out of range"),
    (["--param", "percentil=99"], "Did you mean 'percentile'?"),
    (["--include-layers", "1.5"], "must be in (0, 1]"),
    (["--include-layers", "0.5", "--param", "include_layers=0.5"], "give the layers once"),
])  # fmt: skip
def test_bad_arguments_are_one_line_errors_and_nothing_is_overwritten(run_dir, capsys, argv, message):
    folder, _ = run_dir
    before = snapshot(folder)
    assert main(["identify", "--from", str(folder), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert snapshot(folder) == before


def test_identify_reports_agreement_with_the_published_ses(tmp_path, capsys):
    values = background(8, 128, seed=6)
    values[1, 68], values[2, 92], values[3, 82] = 744.0, 540.0, 430.0
    save_table_run(tmp_path, expert_table(values), 8, model="Qwen/Qwen3-30B-A3B-Base")
    assert main(["identify", "--from", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "super_experts.json").read_text())
    assert saved["known"]["agrees"] is True and saved["known"]["model"] == "Qwen3-30B-A3B"
    assert "paper: agrees with the published SEs of Qwen3-30B-A3B" in capsys.readouterr().out
    assert main(["identify", "--from", str(tmp_path), "--include-layers", "1,2"]) == 0
    saved = json.loads((tmp_path / "super_experts.json").read_text())
    assert saved["known"]["missing"] == [{"layer": 3, "expert": 82}]


def test_identify_on_a_profiled_tiny_model(tmp_path):
    """End to end on a real profile: DeepSeek-V2 (dense layer 0, shared experts)."""
    import families
    from superexperts.capture.profile import profile
    from superexperts.identify.profile_run import save_run

    prof = profile(families.build("deepseek_v2"), families.random_ids(samples=2, seq_len=8))
    save_run(tmp_path, prof, rules.paper(prof.expert_stats, prof.num_layers))
    assert main(["identify", "--from", str(tmp_path), "--criterion", "quantile", "--param", "q=0.9",
                 "--include-layers", "1.0"]) == 0
    saved = json.loads((tmp_path / "super_experts.json").read_text())
    expected = rules.quantile(prof.expert_stats, prof.num_layers, q=0.9, include_layers=1.0)
    assert [(r["layer"], r["expert"]) for r in saved["super_experts"]] == expected.experts
    assert len(expected.experts) > 0 and all(layer != 0 for layer, _ in expected.experts)  # layer 0 is dense


def test_identify_re_renders_an_existing_report(run_dir, capsys):
    folder, _ = run_dir
    (folder / "report.html").write_text("<html>old</html>")
    assert main(["identify", "--from", str(folder), "--no-report"]) == 0
    assert (folder / "report.html").read_text() == "<html>old</html>"
    assert main(["identify", "--from", str(folder), "--criterion", "reap-abs"]) == 0
    page = (folder / "report.html").read_text()
    assert page != "<html>old</html>" and "reap" in page
    assert "updated " in capsys.readouterr().out
