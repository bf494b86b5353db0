"""Damaged checkpoints fail with one-line UserErrors before any work starts."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import families
from superexperts.models.checkpoints.files import read_header
from superexperts.runs.errors import UserError
from superexperts.scale import stream_profile

IDS = families.random_ids(samples=2, seq_len=8)


@pytest.fixture
def sharded(checkpoints, tmp_path):
    _, folder = checkpoints("olmoe", "sharded")
    return shutil.copytree(folder, tmp_path / "ckpt")


def _shards(folder):
    return sorted(folder.glob("*.safetensors"))


def _fails(folder, match, **kwargs):
    with pytest.raises(UserError, match=match) as info:
        stream_profile(folder, IDS, **kwargs)
    assert "\n" not in str(info.value)


def test_missing_shard(sharded):
    _shards(sharded)[1].unlink()
    _fails(sharded, "missing shard")


def test_truncated_shard(sharded):
    shard = _shards(sharded)[0]
    shard.write_bytes(shard.read_bytes()[:-100])
    _fails(sharded, "truncated")


def test_garbage_header(sharded):
    shard = _shards(sharded)[0]
    data = bytearray(shard.read_bytes())
    data[8:20] = b"not json at!"
    shard.write_bytes(bytes(data))
    _fails(sharded, "not a valid safetensors file")


def test_index_pointing_to_wrong_file(sharded):
    index_path = sharded / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    files = sorted(set(index["weight_map"].values()))
    key = next(k for k, v in index["weight_map"].items() if v == files[0])
    index["weight_map"][key] = files[1]
    index_path.write_text(json.dumps(index))
    _fails(sharded, "inconsistent")


def test_shape_mismatch_between_config_and_shards(sharded):
    config = json.loads((sharded / "config.json").read_text())
    config["intermediate_size"] = 20
    (sharded / "config.json").write_text(json.dumps(config))
    _fails(sharded, "do not match the config")


def test_non_float_tensor(checkpoints, tmp_path):
    from safetensors.torch import load_file, save_file

    _, folder = checkpoints("qwen3_moe", "fused")
    folder = shutil.copytree(folder, tmp_path / "ckpt")
    state = load_file(folder / "model.safetensors")
    key = next(k for k in state if k.endswith("experts.down_proj"))
    state[key] = state[key].to(torch.int32)
    save_file(state, folder / "model.safetensors")
    _fails(folder, "not a float type")


def test_missing_config_and_folder(tmp_path):
    _fails(tmp_path / "nowhere", "not found")
    tmp_path.joinpath("model.safetensors").write_bytes(b"")
    _fails(tmp_path, "no config.json")


def test_read_header_positions(checkpoints):
    """Byte ranges in the header point at the tensor's data (checked against safetensors' reader)."""
    from safetensors import safe_open

    _, folder = checkpoints("qwen3_moe", "fused")
    path = folder / "model.safetensors"
    infos, raw = read_header(path), path.read_bytes()
    with safe_open(path, framework="pt") as f:
        for name in list(infos)[:5]:
            t = f.get_tensor(name)
            assert raw[infos[name].start : infos[name].end] == t.contiguous().view(-1).view(torch.uint8).numpy().tobytes()


def test_quantized_checkpoint_is_refused(checkpoints, tmp_path):
    _, folder = checkpoints("qwen3_moe", "hub")
    folder = shutil.copytree(folder, tmp_path / "ckpt")
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gptq", "bits": 4, "group_size": 128}  # fp8/mxfp4 stream: tests/quantized/
    (folder / "config.json").write_text(json.dumps(config))
    _fails(folder, "quantized \\(gptq\\)")
