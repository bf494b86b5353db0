"""export --overwrite replaces only an earlier export; the result has the usual permissions (issue 14.1, 14.10)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from file_trees import tree_digest
from superexperts.models.checkpoints.export import RECORD, export_pruned
from superexperts.runs.errors import UserError


def test_export_overwrite_cannot_delete_the_source(checkpoints, tmp_path, monkeypatch):
    """The issue's case: `export par/src --out par --overwrite` deleted par/src."""
    _, folder = checkpoints("qwen3_moe", "hub")
    par = tmp_path / "par"
    shutil.copytree(folder, par / "src")
    (par / "other.txt").write_text("mine")
    monkeypatch.chdir(tmp_path)
    before = tree_digest(par)
    for out in (par, par / "src", par / "src" / "sub", Path(".")):
        with pytest.raises(UserError, match="input|current folder"):
            export_pruned(par / "src", [(1, 1)], out, overwrite=True)
    (tmp_path / "alias").symlink_to(par)
    with pytest.raises(UserError, match="is or contains the input"):
        export_pruned(par / "src", [(1, 1)], tmp_path / "alias", overwrite=True)
    assert tree_digest(par) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alias", "par"]


def test_export_overwrite_replaces_only_its_own_output(checkpoints, tmp_path):
    _, folder = checkpoints("qwen3_moe", "hub")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("years of work")
    (tmp_path / "file").write_text("keep")
    before = tree_digest(tmp_path)
    with pytest.raises(UserError, match="did not write"):
        export_pruned(folder, [(1, 1)], tmp_path / "mine", overwrite=True)
    with pytest.raises(UserError, match="is a file"):
        export_pruned(folder, [(1, 1)], tmp_path / "file", overwrite=True)
    with pytest.raises(UserError, match="is or contains the input"):  # e.g. the run folder of --from
        export_pruned(folder, [(1, 1)], tmp_path / "mine", overwrite=True, inputs=[tmp_path / "mine" / "thesis.tex"])
    assert tree_digest(tmp_path) == before
    first = export_pruned(folder, [(1, 1)], tmp_path / "out")
    second = export_pruned(folder, [(2, 3)], tmp_path / "out", overwrite=True)  # an earlier export: replaced
    assert first["experts"] != second["experts"]
    assert (tmp_path / "out" / RECORD).read_text().count('"expert": 3') == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "mine", "out"]  # no hidden copies left


def test_export_has_the_usual_permissions(checkpoints, tmp_path):
    """mkdtemp/mkstemp made the export 0700/0600: a serving process or another user could not read it."""
    _, folder = checkpoints("qwen3_moe", "hub")
    mask = os.umask(0o022)
    os.umask(mask)
    export_pruned(folder, [(1, 1)], tmp_path / "out")
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o777 & ~mask
    for path in (tmp_path / "out").iterdir():
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask, path.name


def test_export_of_an_absent_expert_tensor_is_refused(checkpoints, tmp_path):
    """It reported success with 0 bytes zeroed for that expert (issue 14.8)."""
    from safetensors.torch import load_file, save_file

    _, folder = checkpoints("qwen3_moe", "hub")
    broken = shutil.copytree(folder, tmp_path / "broken")
    tensors = load_file(broken / "model.safetensors")
    del tensors["model.layers.1.mlp.experts.3.down_proj.weight"]
    save_file(tensors, broken / "model.safetensors", metadata={"format": "pt"})
    before = tree_digest(tmp_path)
    with pytest.raises(UserError, match="no tensor for expert 3 of model.layers.1.mlp.experts.down_proj"):
        export_pruned(broken, [(1, 2), (1, 3)], tmp_path / "out")
    assert tree_digest(tmp_path) == before
