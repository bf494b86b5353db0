"""Every kind of run names its model so that `--from` can check it (issue 23): a legacy run's relative
path is never resolved here, a changed copy of the demo is not the built-in demo, and a hub id is
recorded by its snapshot commit and fingerprint."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from catalogue_workspace import PROFILE_ARGS
from safetensors.torch import load_file, save_file

from superexperts.cli import main
from superexperts.identify.profile_run import check_run_of, model_of_run
from superexperts.runs.errors import UserError

SRC = str(Path(__file__).resolve().parents[2] / "src")


def test_legacy_run_with_model_given_is_checked_not_resolved(workspace):
    with pytest.raises(UserError, match="predates absolute model paths.*pass MODEL explicitly"):
        model_of_run(workspace / "legacyrun")
    check_run_of(workspace / "legacyrun", "good")  # MODEL given: checked against what the run recorded
    with pytest.raises(UserError, match="profiled on good \\(a path relative.*model type qwen3_moe.*model type mixtral"):
        check_run_of(workspace / "legacyrun", "other")  # the mixtral: another architecture


def test_a_changed_copy_of_the_demo_is_not_the_builtin_demo(tmp_path, monkeypatch, capfd):
    from superexperts.models.loading import checkpoint_path

    copy = Path(shutil.copytree(checkpoint_path(None), tmp_path / "democopy"))
    tensors = load_file(copy / "model.safetensors")
    name = next(k for k in tensors if "down_proj" in k)
    tensors[name] = tensors[name] * 0.5  # a planted change: the same architecture, other weights
    save_file(tensors, copy / "model.safetensors", metadata={"format": "pt"})
    monkeypatch.chdir(tmp_path)
    assert main(["profile", "--out", "demorun", *PROFILE_ARGS]) == 0
    assert main(["profile", "democopy", "--out", "copyrun", *PROFILE_ARGS]) == 0

    check_run_of("demorun", None)  # `--from runs/demo` on the built-in demo still works
    check_run_of("copyrun", str(copy))
    assert model_of_run("copyrun") == str(copy)  # --from alone evaluates the copy, not the built-in demo
    with pytest.raises(UserError, match="but the built-in demo has weights fingerprint"):
        check_run_of("copyrun", None)
    with pytest.raises(UserError, match="profiled on the built-in demo .*weights fingerprint"):
        check_run_of("demorun", str(copy))
    (tmp_path / "text.txt").write_text("The quick brown fox jumps over the lazy dog. " * 20)
    capfd.readouterr()
    assert main(["prune-eval", "democopy", "--from", "demorun", "--experts", "super", "--ppl", "text.txt",
                 "--seq-len", "16", "--device", "cpu", "--out", "pe"]) == 2  # fmt: skip
    err = capfd.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "weights fingerprint" in err and "democopy" in err, err
    assert not (tmp_path / "pe").exists()


HUB_SCRIPT = """
import json, sys
from superexperts.cli import main
from superexperts.identify.profile_run import check_run_of
from superexperts.runs.errors import UserError
assert main(["profile", "org/tiny", "--out", "hubrun", *sys.argv[1:]]) == 0
out = {"meta": json.load(open("hubrun/profile.json"))["meta"]}
for model in ("local", "twin", "org/tiny"):
    try:
        check_run_of("hubrun", model)
        out[model] = None
    except UserError as e:
        out[model] = str(e)
print(json.dumps(out))
"""


def _snapshot(cache: Path, sha: str, source: Path) -> None:
    repo = cache / "models--org--tiny"
    shutil.copytree(source, repo / "snapshots" / sha)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(sha)


@pytest.mark.slow  # the hub cache location is read at import: a fresh interpreter
def test_hub_runs_record_the_snapshot_commit_and_fingerprint(catalogue_ws, tmp_path):
    cache, sha, sha2 = tmp_path / "hub", "a" * 40, "b" * 40
    _snapshot(cache, sha, catalogue_ws / "good")
    shutil.copytree(catalogue_ws / "good", tmp_path / "local")  # the same files as a local folder
    shutil.copytree(catalogue_ws / "twin", tmp_path / "twin")  # the architecture with other weights
    env = {"PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "PATH": "/usr/bin:/bin",
           "HOME": str(tmp_path)}  # fmt: skip
    run = subprocess.run([sys.executable, "-c", HUB_SCRIPT, *PROFILE_ARGS], cwd=tmp_path, env=env,
                         capture_output=True, text=True, check=False)  # fmt: skip
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["meta"]["model_path"] == "org/tiny" and out["meta"]["revision"] == sha  # the commit, not "main"
    assert set(out["meta"]["fingerprint"]) == {"config", "weights"}
    assert out["org/tiny"] is None and out["local"] is None  # a local copy of the same snapshot is the same model
    assert "weights fingerprint" in out["twin"] and f"the hub model org/tiny at revision {sha}" in out["twin"]
    assert "the local folder" in out["twin"]

    _snapshot(cache, sha2, catalogue_ws / "twin")  # main moves to a snapshot with other weights
    (tmp_path / "text.txt").write_text("The quick brown fox jumps over the lazy dog. " * 20)
    check = subprocess.run([sys.executable, "-m", "superexperts", "prune-eval", "org/tiny", "--from", "hubrun",
                            "--experts", "super", "--ppl", "text.txt", "--seq-len", "16", "--device", "cpu",
                            "--out", "pe"], cwd=tmp_path, env=env, capture_output=True, text=True, check=False)  # fmt: skip
    assert check.returncode == 2, check.stderr
    assert len(check.stderr.strip().splitlines()) == 1, check.stderr
    assert f"revision {sha}" in check.stderr and sha2 in check.stderr, check.stderr
    assert not (tmp_path / "pe").exists()
