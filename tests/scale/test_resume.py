"""An interrupted streaming run resumes from its last finished layer with the same result."""

from __future__ import annotations

import pandas as pd
import pytest

import families
from superexperts.runs.errors import UserError
from superexperts.scale import layerwise, stream_profile

IDS = families.random_ids(samples=4, seq_len=16)


class Interrupted(Exception):
    pass


def _interrupt_inside(monkeypatch, layer_index: int, after_batches: int) -> None:
    """Make the run die inside `layer_index`, after some of its batches were written."""
    real = layerwise.run_layer

    def run_layer(layer, index, *args):
        if index != layer_index:
            return real(layer, index, *args)
        calls = []

        def dying(*a, **k):
            calls.append(1)
            if len(calls) > after_batches:
                raise Interrupted
            return layer(*a, **k)

        return real(dying, index, *args)

    monkeypatch.setattr(layerwise, "run_layer", run_layer)


def test_resume_equals_uninterrupted(checkpoints, tmp_path, monkeypatch):
    _, folder = checkpoints("deepseek_v3", "hub")
    full = stream_profile(folder, IDS, batch_size=1)
    with monkeypatch.context() as m:
        _interrupt_inside(m, layer_index=2, after_batches=2)
        with pytest.raises(Interrupted):
            stream_profile(folder, IDS, batch_size=1, state_dir=tmp_path / "state")
    assert sorted(p.name for p in (tmp_path / "state").glob("layer-*.pt")) == ["layer-00000.pt", "layer-00001.pt"]

    loaded = []
    real_load = layerwise.load_layer
    monkeypatch.setattr(layerwise, "load_layer", lambda *a, **k: (loaded.append(a[3]), real_load(*a, **k)))
    resumed = stream_profile(folder, IDS, batch_size=1, state_dir=tmp_path / "state", resume=True)
    assert loaded == [2, 3]  # layers 0 and 1 were not recomputed
    pd.testing.assert_frame_equal(full.expert_stats, resumed.expert_stats)
    pd.testing.assert_frame_equal(full.layer_stats, resumed.layer_stats)
    pd.testing.assert_frame_equal(full.atom_stats, resumed.atom_stats)  # restored from the saved layer states
    assert not full.atom_stats.empty
    assert not list((tmp_path / "state").glob("hidden-*"))  # a finished run keeps no activations


def test_resume_state_from_other_data_is_refused(checkpoints, tmp_path):
    _, folder = checkpoints("qwen3_moe", "hub")
    stream_profile(folder, IDS, batch_size=2, state_dir=tmp_path / "state")
    with pytest.raises(UserError, match="another model, data or settings"):
        stream_profile(folder, IDS[:, :8], batch_size=2, state_dir=tmp_path / "state", resume=True)
    _, other = checkpoints("mixtral", "hub")
    with pytest.raises(UserError, match="another model"):
        stream_profile(other, IDS, batch_size=2, state_dir=tmp_path / "state", resume=True)


def test_no_atoms_streams_without_them_and_never_resumes_a_state_with_them(checkpoints, tmp_path):
    _, folder = checkpoints("qwen3_moe", "hub")
    full = stream_profile(folder, IDS, batch_size=2, state_dir=tmp_path / "state")
    bare = stream_profile(folder, IDS, batch_size=2, atoms=False)
    assert bare.atom_stats.empty and not full.atom_stats.empty
    assert bare.meta["atoms"] is False and full.meta["atoms"] is True
    pd.testing.assert_frame_equal(bare.expert_stats, full.expert_stats)
    with pytest.raises(UserError, match="another model, data or settings"):  # its layers would lack atoms
        stream_profile(folder, IDS, batch_size=2, state_dir=tmp_path / "state", resume=True, atoms=False)


def test_state_dir_with_foreign_files_is_refused(checkpoints, tmp_path):
    _, folder = checkpoints("qwen3_moe", "hub")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="holds other files"):
        stream_profile(folder, IDS, state_dir=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_run_killed_inside_the_first_layer_resumes(checkpoints, tmp_path, monkeypatch):
    _, folder = checkpoints("qwen3_moe", "hub")
    with monkeypatch.context() as m:
        _interrupt_inside(m, layer_index=0, after_batches=1)
        with pytest.raises(Interrupted):
            stream_profile(folder, IDS, batch_size=1, state_dir=tmp_path / "state")
    resumed = stream_profile(folder, IDS, batch_size=1, state_dir=tmp_path / "state", resume=True)
    full = stream_profile(folder, IDS, batch_size=1)
    pd.testing.assert_frame_equal(full.expert_stats, resumed.expert_stats)
