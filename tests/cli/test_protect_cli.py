"""`superexperts protect` end to end on the demo, and bad input (one line, exit 2, nothing written)."""

from __future__ import annotations

import json
import shutil

import pytest

from expert_tables import background, expert_table, save_table_run
from superexperts.cli import main
from superexperts.models.demo import DEMO_SUPER_EXPERTS

DEMO_DOWN = {f"model.layers.{layer}.mlp.experts.{e}.down_proj" for layer, e in DEMO_SUPER_EXPERTS}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """A profile run folder of the demo (as `superexperts profile` writes it, 4 short windows)."""
    folder = tmp_path_factory.mktemp("protect") / "run"
    assert main(["profile", "--samples", "4", "--seq-len", "32", "--device", "cpu", "--no-report",
                 "--out", str(folder)]) == 0  # fmt: skip
    return folder


def test_run_folder_to_stdout_and_to_a_file(demo_run, tmp_path, capsys):
    capsys.readouterr()
    assert main(["protect", "--from", str(demo_run), "--for", "json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed["modules"]) == DEMO_DOWN
    assert printed["meta"]["command"] == "protect" and "torch" in printed["meta"]["versions"]
    out = tmp_path / "keep.yaml"
    assert main(["protect", "--from", str(demo_run), "--for", "llm-compressor", "--out-file", str(out)]) == 0
    text = out.read_text()
    assert all(name in text for name in DEMO_DOWN) and text.startswith("# superexperts protect")
    assert main(["protect", "--from", str(demo_run), "--for", "llm-compressor", "--out-file", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert out.read_text() == text
    assert main(["protect", "--from", str(demo_run), "--for", "gptqmodel", "--out-file", str(out), "--overwrite"]) == 0
    assert len(json.loads(out.read_text())["dynamic"]) == len(DEMO_DOWN)


def test_model_is_profiled_first(tmp_path, capsys):
    run_dir = tmp_path / "run"
    argv = ["protect", "--for", "autoround", "--profile-out", str(run_dir), "--samples", "4", "--seq-len", "32",
            "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    assert set(json.loads(capsys.readouterr().out)["layer_config"]) == DEMO_DOWN
    assert (run_dir / "profile.json").is_file() and (run_dir / "super_experts.json").is_file()


def test_a_run_without_super_experts_writes_nothing(tmp_path, capsys):
    folder = tmp_path / "flat"
    save_table_run(folder, expert_table(background(4, 8) * 0 + 1.0), 4, model_type="toy")  # no outlier: no SE
    out = tmp_path / "keep.json"
    assert main(["protect", "--from", str(folder), "--for", "json", "--out-file", str(out)]) == 2
    err = capsys.readouterr().err
    assert "lists no Super Experts" in err and err.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize("extra, message", [
    (["--for", "autorond"], "Did you mean 'autoround'"),
    (["--for", "json", "--checkpoint", "no/such/folder"], "is not a folder"),
])  # fmt: skip
def test_bad_flags_write_nothing(demo_run, tmp_path, capsys, extra, message):
    out = tmp_path / "keep.txt"
    assert main(["protect", "--from", str(demo_run), "--out-file", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_a_run_whose_model_moved_takes_checkpoint(demo_run, tmp_path, capsys):
    moved = tmp_path / "run"
    shutil.copytree(demo_run, moved)
    profile = json.loads((moved / "profile.json").read_text())
    profile["meta"] |= {"synthetic": False, "model_path": str(tmp_path / "gone"), "model": str(tmp_path / "gone")}
    (moved / "profile.json").write_text(json.dumps(profile))
    assert main(["protect", "--from", str(moved), "--for", "json"]) == 2
    assert "--checkpoint" in capsys.readouterr().err
    from superexperts.models.demo import demo_checkpoint

    assert main(["protect", "--from", str(moved), "--for", "json", "--checkpoint", str(demo_checkpoint())]) == 0
    assert set(json.loads(capsys.readouterr().out)["modules"]) == DEMO_DOWN


def test_the_old_out_spelling_still_writes_with_a_note(demo_run, tmp_path, capsys):
    out = tmp_path / "keep.yaml"
    assert main(["protect", "--from", str(demo_run), "--for", "llm-compressor", "--out", str(out)]) == 0
    assert "--out is deprecated, use --out-file" in capsys.readouterr().err
    assert out.read_text() == "".join(
        main(["protect", "--from", str(demo_run), "--for", "llm-compressor"]) == 0 and capsys.readouterr().out)


def test_a_run_folder_as_the_positional_still_works_with_a_note(demo_run, capsys):
    assert main(["protect", str(demo_run), "--for", "json"]) == 0
    out, err = capsys.readouterr()
    assert set(json.loads(out)["modules"]) == DEMO_DOWN
    assert err.strip() == (f"superexperts: note: a run folder as the positional argument ({demo_run}) is deprecated, "
                           f"use --from {demo_run} (the old spelling goes in the next release).")  # fmt: skip


def test_super_atoms_as_module_channels(demo_run, tmp_path, capsys):
    """--for json --atoms: each SE's super atoms as down_proj input columns and gate/up output rows."""
    run = shutil.copytree(demo_run, tmp_path / "run")
    path = run / "super_experts.json"
    doc = json.loads(path.read_text())
    for s in doc["super_experts"]:  # a hand-made list, so that two atoms and their order are checked
        s["super_atoms"] = [{"atom": 0, "share": 0.97}, {"atom": 5, "share": 0.02}]
    path.write_text(json.dumps(doc))
    capsys.readouterr()
    assert main(["protect", "--from", str(run), "--for", "json", "--atoms"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["granularity"] == "atom"
    for layer, e in DEMO_SUPER_EXPERTS:
        [entry] = [x for x in printed["entries"] if (x["layer"], x["expert"]) == (layer, e)]
        prefix = f"model.layers.{layer}.mlp.experts.{e}"
        assert {"module": f"{prefix}.down_proj", "columns": [0, 5]} in entry["channels"]
        assert {"module": f"{prefix}.gate_proj", "rows": [0, 5]} in entry["channels"]
        assert {"module": f"{prefix}.up_proj", "rows": [0, 5]} in entry["channels"]
        assert entry["atoms"][0] == {"atom": 0, "share": 0.97}
    for extra, message in ((["--for", "autoround", "--atoms"], "only --for json carries"),
                           (["--for", "json", "--atoms", "--whole-layer"], "pass one of them")):  # fmt: skip
        assert main(["protect", "--from", str(run), *extra]) == 2
        assert message in capsys.readouterr().err
    old = shutil.copytree(demo_run, tmp_path / "old")  # a run made before super atoms were recorded
    doc = json.loads((old / "super_experts.json").read_text())
    for s in doc["super_experts"]:
        s.pop("super_atoms", None)
    (old / "super_experts.json").write_text(json.dumps(doc))
    assert main(["protect", "--from", str(old), "--for", "json", "--atoms"]) == 2
    assert "has no super atoms; re-run `superexperts profile`" in capsys.readouterr().err
