"""In-memory loading refuses damaged checkpoints and silently wrong models in one line (issue 14.3, 14.6)."""

from __future__ import annotations

import json
import shutil
import socket
import struct
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

import families
from superexperts.models.checkpoints.integrity import hub_unreachable
from superexperts.models.device_map import resolve_device
from superexperts.models.loading import load_config, load_model
from superexperts.runs.errors import SuperExpertsWarning, UserError


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny Qwen3-MoE checkpoint (hub per-expert layout), sharded, and its tensors."""
    model = families.build("qwen3_moe")
    folder = tmp_path_factory.mktemp("ckpt") / "single"
    model.save_pretrained(folder)
    model.save_pretrained(folder.parent / "sharded", max_shard_size="40KB")
    return folder, folder.parent / "sharded", load_file(folder / "model.safetensors")


def _copy(folder, tmp_path):
    return shutil.copytree(folder, tmp_path / "ckpt")


def _refused(folder, match, **kwargs):
    with pytest.raises(UserError, match=match) as info:
        load_model(str(folder), device="cpu", **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


def _resave(folder, tensors):
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def test_truncated_and_bad_headers(saved, tmp_path):
    folder = _copy(saved[0], tmp_path)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-100])
    _refused(folder, "is truncated")
    weights.write_bytes(struct.pack("<Q", 2**40) + data[8:])
    _refused(folder, "not a valid safetensors file")
    weights.write_bytes(struct.pack("<Q", 5) + b"nojso")
    _refused(folder, "not a valid safetensors file")
    weights.write_bytes(b"")
    _refused(folder, "not a valid safetensors file")
    weights.unlink()
    _refused(folder, "no safetensors weights")


def test_missing_shard(saved, tmp_path):
    folder = _copy(saved[1], tmp_path)
    max(folder.glob("*.safetensors")).unlink()
    _refused(folder, "missing shard")


def test_missing_expert_tensor(saved, tmp_path):
    folder = _copy(saved[0], tmp_path)
    _resave(folder, {k: v for k, v in saved[2].items() if k != "model.layers.1.mlp.experts.3.down_proj.weight"})
    _refused(folder, r"experts.down_proj has shape \(7, 32, 16\) in the checkpoint but config.json implies \(8, 32, 16\)")


def test_missing_and_unexpected_weights_are_refused(saved, tmp_path):
    """transformers random-initialises a missing attention weight and runs normally (the bug)."""
    folder = _copy(saved[0], tmp_path)
    tensors = dict(saved[2])
    del tensors["model.layers.1.self_attn.q_proj.weight"], tensors["model.norm.weight"]
    _resave(folder, tensors)
    message = _refused(folder, "2 weight\\(s\\) missing from the checkpoint")
    assert "model.layers.1.self_attn.q_proj.weight" in message and "--allow-missing-weights" in message
    _resave(folder, dict(saved[2]) | {"model.layers.1.extra.weight": torch.zeros(3)})
    _refused(folder, "1 checkpoint tensor\\(s\\) the model has no place for \\(model.layers.1.extra.weight\\)")


def test_opting_in_loads_with_a_warning(demo_dir, tmp_path):
    folder = _copy(demo_dir, tmp_path)
    tensors = load_file(folder / "model.safetensors")
    del tensors["model.layers.0.input_layernorm.weight"]
    _resave(folder, tensors)
    _refused(folder, "missing from the checkpoint")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_model(str(folder), device="cpu", allow_missing_weights=True)
    assert [w.category for w in caught if "--allow-missing-weights" in str(w.message)] == [SuperExpertsWarning]
    good = load_model(str(demo_dir), device="cpu")
    state, expected = loaded.model.state_dict(), good.model.state_dict()
    assert all(torch.equal(state[k], expected[k]) for k in expected if k != "model.layers.0.input_layernorm.weight")


REMOTE_CONFIG = '''from transformers import PretrainedConfig


class TinySEConfig(PretrainedConfig):
    model_type = "tinyse"

    def __init__(self, vocab_size=16, hidden_size=8, num_experts=2, **kwargs):
        self.vocab_size, self.hidden_size, self.num_experts = vocab_size, hidden_size, num_experts
        super().__init__(**kwargs)
'''
REMOTE_MODEL = '''import torch
from transformers import PreTrainedModel

from .configuration_tinyse import TinySEConfig


class TinySEForCausalLM(PreTrainedModel):
    config_class = TinySEConfig

    def __init__(self, config):
        super().__init__(config)
        self.embed = torch.nn.Embedding(config.vocab_size, config.hidden_size)
        self.head = torch.nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.embed

    def forward(self, input_ids, **kwargs):
        return self.head(self.embed(input_ids))
'''


def test_remote_code_class_with_other_names(tmp_path, monkeypatch):
    import sys

    from transformers import dynamic_module_utils

    monkeypatch.setattr(dynamic_module_utils, "HF_MODULES_CACHE", str(tmp_path / "modules"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    folder = tmp_path / "remote"
    folder.mkdir()
    (folder / "configuration_tinyse.py").write_text(REMOTE_CONFIG)
    (folder / "modeling_tinyse.py").write_text(REMOTE_MODEL)
    (folder / "config.json").write_text(json.dumps({
        "model_type": "tinyse", "architectures": ["TinySEForCausalLM"], "num_experts": 2,
        "auto_map": {"AutoConfig": "configuration_tinyse.TinySEConfig",
                     "AutoModelForCausalLM": "modeling_tinyse.TinySEForCausalLM"}}))  # fmt: skip
    save_file({"model.embed_tokens.weight": torch.ones(16, 8), "lm_head.weight": torch.ones(16, 8)},
              folder / "model.safetensors")  # fmt: skip
    message = _refused(folder, "missing from the checkpoint", trust_remote_code=True)
    assert "embed.weight" in message and "lm_head.weight" in message
    # control: the same class with matching names gets past the weights (and stops at the absent tokenizer)
    save_file({"embed.weight": torch.ones(16, 8), "head.weight": torch.ones(16, 8)}, folder / "model.safetensors")
    _refused(folder, "no usable tokenizer", trust_remote_code=True)


@pytest.mark.parametrize(("text", "match"), [("garbage{", "not a valid JSON"), ("\x00\xff", "not a valid JSON"),
                                             ('{"num_hidden_layers": "x"}', "model_type")])  # fmt: skip
def test_garbage_config_is_reported_as_such(saved, tmp_path, text, match):
    folder = _copy(saved[0], tmp_path)
    (folder / "config.json").write_text(text, encoding="latin-1")
    with pytest.raises(UserError, match=match) as info:
        load_config(str(folder), False)
    assert "not a local folder" not in str(info.value)


def test_unavailable_devices():
    if not torch.backends.mps.is_available():
        with pytest.raises(UserError, match="MPS is not available"):
            resolve_device("mps")
    with pytest.raises(UserError, match="CUDA"):
        resolve_device(f"cuda:{max(torch.cuda.device_count(), 1) + 3}")


@pytest.fixture
def hub_probe(monkeypatch):
    """Offline mode off, the hub endpoint a closed local port; the probe's cache cleared around the test."""
    from huggingface_hub import constants

    with socket.socket() as s:  # a port nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    hub_unreachable.cache_clear()
    yield constants
    hub_unreachable.cache_clear()


def test_hub_probe(hub_probe, monkeypatch):
    assert hub_unreachable()
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setattr(hub_probe, "ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        hub_unreachable.cache_clear()
        assert not hub_unreachable()
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")  # the client may get through where we cannot
    hub_unreachable.cache_clear()
    assert not hub_unreachable()


def test_unreachable_hub_id_fails_without_retries(hub_probe, monkeypatch):
    """No network and no offline mode: huggingface_hub retried 5 times with backoff (~27 s)."""
    from huggingface_hub.utils import _http

    sleeps = []
    monkeypatch.setattr(_http.time, "sleep", sleeps.append)
    with pytest.raises(UserError) as info:
        load_config("no-such-org/no-such-model", False)
    assert sleeps == []  # before: [1, 2, 4, 8, 8] s of backoff
    assert "offline" in str(info.value) and "\n" not in str(info.value)
