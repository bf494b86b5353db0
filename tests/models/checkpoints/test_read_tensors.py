"""checkpoint_files.read_tensors: the bytes the headers point at, viewed as safetensors' own reader gives them."""

from __future__ import annotations

import contextlib

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from superexperts.models.checkpoints.files import ALIGN, read_tensor_index, read_tensors


def assert_reads_like_safetensors(folder):
    infos = read_tensor_index(folder)
    with contextlib.ExitStack() as stack:
        files = {info.file: stack.enter_context(open(info.file, "rb", buffering=0)) for info in infos.values()}
        got = read_tensors(infos, files)
    storages = {t.untyped_storage().data_ptr() for t in got.values()}
    assert len(storages) == 1  # one buffer for the whole chunk
    for key, info in infos.items():
        with safe_open(info.file, framework="pt") as f:
            expected = f.get_tensor(key)
        assert got[key].dtype == expected.dtype and got[key].shape == expected.shape, key
        bits = [t.reshape(-1).view(torch.uint8) for t in (got[key], expected)]
        assert torch.equal(*bits), key  # bit for bit (NaN too)
        assert got[key].data_ptr() % ALIGN == 0, key


def test_every_dtype_and_shape(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {
        "a.f32": torch.randn(3, 5, generator=g), "b.bf16": torch.randn(7, generator=g).bfloat16(),
        "c.f16": torch.tensor([float("nan"), -0.0, 1e4]).half(), "d.i64": torch.arange(5),
        "e.bool": torch.tensor([True, False, True]), "f.scalar": torch.tensor(2.5), "g.empty": torch.zeros(0, 4),
        "h.u8": torch.randint(0, 255, (9,), dtype=torch.uint8, generator=g),
        "i.f8": torch.randn(4, 3, generator=g).to(torch.float8_e4m3fn), "j.f64": torch.randn(2, generator=g).double(),
    }  # fmt: skip
    save_file(tensors, tmp_path / "model.safetensors")
    assert_reads_like_safetensors(tmp_path)


def test_fp8_and_mxfp4_checkpoints(qwen3_fp8, gpt_oss_mxfp4):
    assert_reads_like_safetensors(qwen3_fp8)  # float8 codes, float32 scales, bf16 rest, several shards
    assert_reads_like_safetensors(gpt_oss_mxfp4)  # uint8 blocks and scales


def test_a_short_file_is_a_one_line_error(tmp_path):
    from superexperts.runs.errors import UserError

    save_file({"w": torch.randn(64)}, tmp_path / "model.safetensors")
    info = read_tensor_index(tmp_path)["w"]
    (tmp_path / "model.safetensors").write_bytes((tmp_path / "model.safetensors").read_bytes()[:-8])
    with open(info.file, "rb", buffering=0) as f, pytest.raises(UserError, match="cannot read .* ends before .w."):
        read_tensors({"w": info}, {info.file: f})
