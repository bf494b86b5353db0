"""Tiny checkpoints written the way quantized MoE models are published (quantized_checkpoints.py)."""

from __future__ import annotations

import pytest

import quantized_checkpoints as quantized


@pytest.fixture(scope="session")
def qwen3_fp8(tmp_path_factory):
    model = quantized.qwen3_fp8_model()
    folder = tmp_path_factory.mktemp("qwen3-fp8") / "ckpt"
    model.save_pretrained(folder, max_shard_size="1MB")  # several shards with an index
    return quantized.fp8_copy(folder, folder)


@pytest.fixture(scope="session")
def deepseek_fp8(tmp_path_factory):
    return quantized.write_fp8(quantized.deepseek_partial_model(), tmp_path_factory.mktemp("deepseek-fp8") / "ckpt")


@pytest.fixture(scope="session")
def gpt_oss_mxfp4(tmp_path_factory):
    return quantized.write_mxfp4(quantized.gpt_oss_model(), tmp_path_factory.mktemp("gpt-oss-mxfp4") / "ckpt")
