"""A damaged --state-dir is refused in one line on --resume, never a traceback (issue 14.6)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import families
from superexperts.runs.errors import UserError
from superexperts.scale import stream_profile

IDS = families.random_ids(samples=4, seq_len=16)


@pytest.fixture(scope="module")
def finished_state(checkpoints, tmp_path_factory):
    """(checkpoint folder, the state folder of a finished run)."""
    _, folder = checkpoints("qwen3_moe", "hub")
    state = tmp_path_factory.mktemp("state") / "state"
    stream_profile(folder, IDS, batch_size=2, state_dir=state)
    return folder, state


def _state_json(state):
    return json.loads((state / "state.json").read_text())


DAMAGE = {
    "binary state.json": lambda s: (s / "state.json").write_bytes(b"\xff\xfe\x00garbage"),
    "state.json a list": lambda s: (s / "state.json").write_text("[1, 2]"),
    "last_layer not a number": lambda s: (s / "state.json").write_text(
        json.dumps(_state_json(s) | {"last_layer": "two"})),
    "layer file garbage": lambda s: (s / "layer-00001.pt").write_bytes(b"not a pickle at all"),
    "layer file truncated": lambda s: (s / "layer-00001.pt").write_bytes((s / "layer-00001.pt").read_bytes()[:50]),
    "layer file of another kind": lambda s: torch.save({"weights": torch.zeros(2)}, s / "layer-00001.pt"),
    "layer file missing": lambda s: (s / "layer-00001.pt").unlink(),
}  # fmt: skip


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_state_is_refused(finished_state, tmp_path, damage):
    folder, state = finished_state
    copy = shutil.copytree(state, tmp_path / "state")
    DAMAGE[damage](copy)
    with pytest.raises(UserError, match="damaged|unreadable|not a layer state") as info:
        stream_profile(folder, IDS, batch_size=2, state_dir=copy, resume=True)
    # a damaged layer file: run without --resume; a damaged state.json: another --state-dir (issue 23:
    # it may not be ours, and --resume may not have been given)
    assert "\n" not in str(info.value) and ("--resume" in str(info.value) or "--state-dir" in str(info.value))


def test_damaged_saved_hidden_states_are_refused(checkpoints, tmp_path, monkeypatch):
    """A run interrupted after layer 0 resumes from saved hidden states; damaged ones are refused."""
    from superexperts.scale import layerwise

    _, folder = checkpoints("qwen3_moe", "hub")
    real = layerwise.run_layer

    def dies_in_layer_1(layer, index, *args):
        if index == 1:
            raise KeyboardInterrupt
        return real(layer, index, *args)

    with monkeypatch.context() as m:
        m.setattr(layerwise, "run_layer", dies_in_layer_1)
        with pytest.raises(KeyboardInterrupt):
            stream_profile(folder, IDS, batch_size=2, state_dir=tmp_path / "state")
    hidden = sorted((tmp_path / "state").glob("hidden-*/*.safetensors"))
    assert hidden  # layer 1's inputs were kept for the resume
    hidden[0].write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    with pytest.raises(UserError, match="saved hidden states .* are unreadable") as info:
        stream_profile(folder, IDS, batch_size=2, state_dir=tmp_path / "state", resume=True)
    assert "\n" not in str(info.value)
