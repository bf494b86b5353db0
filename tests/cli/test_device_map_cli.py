"""`--device-map FILE`: layers on the CPU and offloaded to disk give the in-memory expert table."""

from __future__ import annotations

import json

import pytest

from file_trees import odd_layers_on_disk
from superexperts.cli import main
from superexperts.models.demo import heldout_path


def _profile(demo_dir, out, *extra):
    argv = ["profile", str(demo_dir), "--samples", "4", "--seq-len", "32", "--batch-size", "2", "--no-report",
            "--out", str(out), *extra]  # fmt: skip
    assert main(argv) == 0
    return json.loads((out / "profile.json").read_text())


def _same_table(got_rows, want_rows):
    """Every index (channel, sample, position, token) equal; values to float32 rounding (offloaded
    weights come back from disk in another memory layout, so sums may round differently)."""
    assert len(got_rows) == len(want_rows)
    for got, want in zip(got_rows, want_rows):
        assert got.keys() == want.keys()
        for key, value in want.items():
            if isinstance(value, float):
                assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-12), (want["layer"], key)
            else:
                assert got[key] == value, (want["layer"], key)


def test_disk_offloaded_layers_give_the_in_memory_table(demo_dir, tmp_path):
    in_memory = _profile(demo_dir, tmp_path / "mem", "--device", "cpu")
    placed = _profile(demo_dir, tmp_path / "map", "--device-map", str(odd_layers_on_disk(demo_dir, tmp_path / "map.json")))
    _same_table(placed["expert_stats"], in_memory["expert_stats"])
    _same_table(placed["layer_stats"], in_memory["layer_stats"])
    recorded = placed["meta"]["device_map"]
    assert recorded["placement"]["model.layers.1"] == "disk" and recorded["placement"]["model.layers.0"] == "cpu"
    assert "device_map" not in in_memory["meta"]


@pytest.mark.parametrize(("changes", "extra", "message"), [
    ({}, ["--device", "cpu"], "give one of them"),
    ({"model.layerz.0": "cpu"}, [], "model.layerz.0 is not module(s) of this model"),
    ({"lm_head": "meta"}, [], "'meta' is not a device"),
    ({"lm_head": "cuda:7"}, [], "--device-map"),
    (None, [], "not valid JSON"),
    ("drop", [], "no device for lm_head"),
])  # fmt: skip
def test_bad_device_maps_are_one_line_before_loading(demo_dir, tmp_path, capsys, changes, extra, message):
    path = tmp_path / "map.json"
    if changes is None:
        path.write_text("{not json")
    elif changes == "drop":
        odd_layers_on_disk(demo_dir, path)
        path.write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != "lm_head"}))
    else:
        odd_layers_on_disk(demo_dir, path, **changes)
    out = tmp_path / "out"
    assert main(["profile", str(demo_dir), "--device-map", str(path), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (out / "profile.json").exists()


@pytest.mark.parametrize("cmd", [["sinks", "--experts", "1:1"], ["prune-eval", "--experts", "1:1", "--ppl", str(heldout_path())]])
def test_device_and_device_map_together_refused(demo_dir, tmp_path, capsys, cmd):
    argv = [cmd[0], str(demo_dir), *cmd[1:], "--device", "cpu", "--device-map", "auto", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    assert "give one of them" in capsys.readouterr().err
    assert main(["profile", str(demo_dir), "--stream", "--device-map", "auto", "--out", str(tmp_path / "p")]) == 2
    assert "--stream and --device-map" in capsys.readouterr().err


def test_sinks_with_offloaded_layers(demo_dir, tmp_path):
    """Layers 0, 2 resident, odd layers on disk: the same sinks, also when the pruned expert's layer is
    on disk (1:13: zeroed in the offload store, ablate.zero) or resident (2:41)."""
    placement = str(odd_layers_on_disk(demo_dir, tmp_path / "map.json"))
    common = ["sinks", str(demo_dir), "--random", "0", "--samples", "1", "--seq-len", "32", "--dtype", "float32"]
    for prune in ("2:41", "1:13"):
        assert main([*common, "--experts", prune, "--device", "cpu", "--out", str(tmp_path / prune / "mem")]) == 0
        assert main([*common, "--experts", prune, "--device-map", placement, "--out", str(tmp_path / prune / "map")]) == 0
        in_memory, placed = (json.loads((tmp_path / prune / d / "sinks.json").read_text()) for d in ("mem", "map"))
        assert [c["name"] for c in placed["conditions"]] == [c["name"] for c in in_memory["conditions"]]
        for got, want in zip(placed["conditions"], in_memory["conditions"]):
            assert got["sink_mass"] == pytest.approx(want["sink_mass"], rel=1e-5)
            assert got["max_hidden"] == pytest.approx(want["max_hidden"], rel=1e-5)
            assert got["sink_rate"] == want["sink_rate"]
        pruned = placed["conditions"][1]
        assert pruned["max_hidden"] != pytest.approx(placed["conditions"][0]["max_hidden"], rel=1e-3)  # it pruned
        assert placed["device_map"]["placement"]["model.layers.1"] == "disk"


def test_offloaded_shared_experts_record_their_atoms(checkpoints, tmp_path):
    """A shared expert's down Linear offloaded to disk puts its weight back before our forward hook runs:
    its atom statistics (which read that weight) must come from the offload store, equal to in memory."""
    import shutil

    import pandas as pd

    import families

    folder = tmp_path / "ckpt"
    shutil.copytree(checkpoints("deepseek_v3", "hub")[1], folder)
    families.char_tokenizer().save_pretrained(folder)
    _profile(folder, tmp_path / "mem", "--device", "cpu")
    _profile(folder, tmp_path / "map", "--device-map", str(odd_layers_on_disk(folder, tmp_path / "map.json")))
    want, got = (pd.read_parquet(tmp_path / name / "atom_stats.parquet") for name in ("mem", "map"))
    assert set(want.kind) == {"routed", "shared"}
    pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-5, atol=1e-7)
