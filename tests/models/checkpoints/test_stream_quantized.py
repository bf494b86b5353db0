"""Checkpoints as published (block-wise FP8, MXFP4) stream to the in-memory profile of the same file."""

from __future__ import annotations

import json
import shutil
import weakref
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import FineGrainedFP8Config, Mxfp4Config

import families
import quantized_checkpoints as qz
from file_trees import drop_tensor
from superexperts import find_super_experts
from superexperts.capture.profile import profile
from superexperts.cli import main
from superexperts.evaluate.ablate import ablate
from superexperts.evaluate.perplexity import perplexity
from superexperts.models.checkpoints.formats import dequantized_bytes
from superexperts.models.checkpoints.reader import Checkpoint
from superexperts.models.checkpoints.skeleton import build_skeleton, layers_path
from superexperts.models.demo import DEMO_SUPER_EXPERTS, demo_checkpoint
from superexperts.models.loading import load_model
from superexperts.runs.errors import UserError
from superexperts.scale import stream_profile
from superexperts.scale.scoring import stream_perplexity

IDS = families.random_ids(samples=4, seq_len=16)


def dequantized_copy(folder, out):
    """The checkpoint with every quantized tensor replaced by its value (tests' own dequantization)."""
    out.mkdir()
    state = {}
    for path in folder.glob("*.safetensors"):
        with safe_open(path, framework="pt") as f:
            state |= {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not a dict
    plain = {}
    for key, t in state.items():
        if key.endswith(("_scale_inv", "_scales")):
            continue
        if t.dtype == torch.float8_e4m3fn:
            plain[key] = qz.fp8_dequantize(t, state[key + "_scale_inv"])
        elif key.endswith("_blocks"):
            stem = key.removesuffix("_blocks")
            plain[stem] = qz.mxfp4_dequantize(t, state[stem + "_scales"]).transpose(1, 2).contiguous()
        else:
            plain[key] = t.float()
    save_file(plain, out / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((folder / "config.json").read_text())
    del config["quantization_config"]
    (out / "config.json").write_text(json.dumps(config))
    return out


def assert_same_table(a, b, planted):
    pd.testing.assert_frame_equal(a.expert_stats, b.expert_stats, rtol=1e-3)
    assert find_super_experts(a).experts == find_super_experts(b).experts
    assert planted in find_super_experts(b).experts


def test_fp8_streams_to_the_in_memory_profile(qwen3_fp8):
    assert len(list(qwen3_fp8.glob("*.safetensors"))) > 1
    reference = qz.in_memory(qwen3_fp8, FineGrainedFP8Config(dequantize=True))
    assert_same_table(profile(reference, IDS, batch_size=2), stream_profile(qwen3_fp8, IDS, batch_size=2),
                      planted=(1, 5))  # fmt: skip


def test_fp8_partial_blocks_read_as_deepseek_writes_them(deepseek_fp8, tmp_path):
    with safe_open(deepseek_fp8 / "model.safetensors", framework="pt") as f:
        assert f.get_slice("model.layers.1.self_attn.kv_a_proj_with_mqa.weight_scale_inv").get_shape() == [2, 2]
    reference = qz.in_memory(dequantized_copy(deepseek_fp8, tmp_path / "plain"), None)
    streamed = stream_profile(deepseek_fp8, IDS, batch_size=2)
    assert_same_table(profile(reference, IDS, batch_size=2), streamed, planted=(1, 4))
    # the loaded weights themselves, edge blocks included
    skeleton, _ = build_skeleton(deepseek_fp8, torch.float32)
    ckpt = Checkpoint.open(deepseek_fp8, skeleton, layers_prefix=layers_path(skeleton))
    ckpt.load(skeleton, ckpt.layer_keys[1], device="cpu", dtype=torch.float32)
    for name, p in skeleton.model.layers[1].named_parameters():
        assert torch.equal(p, reference.model.layers[1].get_parameter(name)), name



def test_fp8_partial_blocks_in_memory_equal_the_stream(deepseek_fp8, tmp_path):
    """In memory, the edge blocks load through the streaming path's dequantization (transformers' own op
    misreads them): the same weights as the tests' own dequantization, the same table as --stream."""
    folder = shutil.copytree(deepseek_fp8, tmp_path / "ckpt")
    families.char_tokenizer().save_pretrained(folder)  # load_model loads a tokenizer too
    loaded = load_model(str(folder), device="cpu", dtype="float32")
    reference = qz.in_memory(dequantized_copy(deepseek_fp8, tmp_path / "plain"), None)
    for name, p in reference.named_parameters():
        assert torch.equal(loaded.model.get_parameter(name), p), name
    assert_same_table(profile(loaded.model, IDS, batch_size=2), stream_profile(deepseek_fp8, IDS, batch_size=2),
                      planted=(1, 4))  # fmt: skip


def test_mxfp4_streams_to_the_in_memory_profile(gpt_oss_mxfp4, tmp_path):
    reference = qz.in_memory(gpt_oss_mxfp4, Mxfp4Config(dequantize=True))
    independent = qz.in_memory(dequantized_copy(gpt_oss_mxfp4, tmp_path / "plain"), None)
    for name, p in independent.named_parameters():  # transformers' MXFP4 decoding equals the format's definition
        assert torch.equal(p, reference.get_parameter(name)), name
    assert_same_table(profile(reference, IDS, batch_size=2), stream_profile(gpt_oss_mxfp4, IDS, batch_size=2),
                      planted=(1, 3))  # fmt: skip


@pytest.mark.slow
def test_fp8_demo_cli_in_memory_and_streamed(tmp_path):
    folder = qz.fp8_copy(demo_checkpoint(tmp_path / "cache"), tmp_path / "fp8")
    runs = {}
    for name, extra in (("mem", []), ("stream", ["--stream"])):
        argv = ["profile", str(folder), "--samples", "4", "--seq-len", "32", "--device", "cpu", "--no-report",
                "--out", str(tmp_path / name), *extra]  # fmt: skip
        assert main(argv) == 0
        runs[name] = json.loads((tmp_path / name / "profile.json").read_text())
        found = json.loads((tmp_path / name / "super_experts.json").read_text())["super_experts"]
        assert {(e["layer"], e["expert"]) for e in found} >= set(DEMO_SUPER_EXPERTS)
    mem, stream = (pd.DataFrame(runs[n]["expert_stats"]) for n in ("mem", "stream"))
    pd.testing.assert_frame_equal(mem, stream, rtol=1e-3)


def _copy(folder, tmp_path):
    return shutil.copytree(folder, tmp_path / "damaged")




@pytest.mark.parametrize(("fixture", "key"), [
    ("qwen3_fp8", "model.layers.2.mlp.experts.6.down_proj.weight_scale_inv"),
    ("deepseek_fp8", "model.layers.1.self_attn.kv_a_proj_with_mqa.weight_scale_inv"),
    ("gpt_oss_mxfp4", "model.layers.3.mlp.experts.gate_up_proj_scales"),
])  # fmt: skip
def test_missing_scale_is_one_line_error(request, tmp_path, fixture, key):
    folder = _copy(request.getfixturevalue(fixture), tmp_path)
    drop_tensor(folder, key)
    with pytest.raises(UserError, match="scale .* is missing") as info:
        stream_profile(folder, IDS)
    assert key in str(info.value) and "\n" not in str(info.value)


def test_fp8_weights_without_quantization_config_are_refused(qwen3_fp8, tmp_path):
    folder = _copy(qwen3_fp8, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    del config["quantization_config"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="F8_E4M3, not a float type.*quantization_config"):
        stream_profile(folder, IDS)


@pytest.mark.parametrize(("fixture", "quantization"), [("qwen3_fp8", FineGrainedFP8Config(dequantize=True)),
                                                        ("gpt_oss_mxfp4", Mxfp4Config(dequantize=True))])  # fmt: skip
def test_in_memory_size_is_the_dequantized_size(request, monkeypatch, fixture, quantization):
    folder = request.getfixturevalue(fixture)
    loaded = qz.in_memory(folder, quantization)
    expected = sum(t.numel() * t.element_size() for t in loaded.state_dict().values())
    assert dequantized_bytes(str(folder), torch.float32) == expected
    files = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    free = (files + expected) // 2  # the files would fit, the dequantized model does not
    monkeypatch.setattr("psutil.virtual_memory", lambda: SimpleNamespace(available=free))
    with pytest.raises(UserError, match="--stream"):
        load_model(str(folder), device="cpu")


def test_fp8_streamed_perplexity_with_pruned_experts(deepseek_fp8, tmp_path):
    ids = families.random_ids(samples=1, seq_len=72, seed=5)[0]
    reference = qz.in_memory(dequantized_copy(deepseek_fp8, tmp_path / "plain"), None)
    experts = [(1, 4), (2, "shared")]
    with ablate(reference, experts, mode="zero"):
        expected = perplexity(reference, ids, seq_len=24, batch_size=2)
    streamed = stream_perplexity(deepseek_fp8, ids, experts=experts, mode="zero", seq_len=24, batch_size=2)
    assert streamed["windows"] == expected["windows"] == 3
    assert streamed["nll_sum"] == expected["nll_sum"]  # the same weights, bit for bit


def test_fp8_codes_are_freed_before_the_experts_are_fused(qwen3_fp8, monkeypatch):
    """When gate and up are concatenated into the fused tensor, no FP8 code of the layer is resident:
    transformers' loader keeps its whole input until it returns, so the loader must be lent the
    tensors (TakeOnce) and the chunk's buffer must go with its last view."""
    from transformers.core_model_loading import Concatenate

    from superexperts.models.checkpoints.formats import BlockFp8Dequantize

    skeleton, _ = build_skeleton(qwen3_fp8, torch.float32)
    ckpt = Checkpoint.open(qwen3_fp8, skeleton, layers_prefix=layers_path(skeleton))
    codes, alive_at_fusing = [], []
    real_dequantize, real_concatenate = BlockFp8Dequantize._dequantize_one, Concatenate.convert

    def dequantize(self, quantized, scales, output_dtype=None):
        codes.append(weakref.ref(quantized.untyped_storage()))
        return real_dequantize(self, quantized, scales, output_dtype=output_dtype)

    def concatenate(self, *args, **kwargs):
        alive_at_fusing.append(sum(ref() is not None for ref in codes))
        return real_concatenate(self, *args, **kwargs)

    monkeypatch.setattr(BlockFp8Dequantize, "_dequantize_one", dequantize)
    monkeypatch.setattr(Concatenate, "convert", concatenate)
    ckpt.load(skeleton, ckpt.layer_keys[1], device="cpu", dtype=torch.float32)
    assert len(codes) > 2 * skeleton.config.num_experts  # gate, up and down of every expert went through the op
    assert alive_at_fusing == [0]  # one fused gate_up, built with every code already freed
    reference = qz.in_memory(qwen3_fp8, FineGrainedFP8Config(dequantize=True))
    for name, p in skeleton.model.layers[1].named_parameters():
        assert torch.equal(p, reference.model.layers[1].get_parameter(name)), name
