"""`superexperts plan`: sizes and FLOPs against independent counts, the modes and recommendations, the CLI."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import families
from superexperts.capture.batching import total_ram
from superexperts.cli import main
from superexperts.models.costs import (
    head_flops_per_token,
    layer_activation_bytes,
    layer_flops_per_token,
    layer_weight_bytes_read,
)
from superexperts.models.shape import model_shape
from superexperts.runs.errors import UserError
from superexperts.scale import plan_measure
from superexperts.scale.devices import DEVICES, device
from superexperts.scale.plan import GB, forward_seconds, make_plan, workload
from superexperts.scale.plan_model import load_plan_model


def _header_bytes(folder: Path) -> tuple[dict[int, int], int]:
    """Bytes per decoder layer and in all, parsed here from the safetensors headers."""
    per_layer: dict[int, int] = {}
    total = 0
    for path in folder.glob("*.safetensors"):
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        header.pop("__metadata__", None)
        for key, h in header.items():
            size = h["data_offsets"][1] - h["data_offsets"][0]
            total += size
            match = re.search(r"\.layers\.(\d+)\.", key)
            if match:
                per_layer[int(match.group(1))] = per_layer.get(int(match.group(1)), 0) + size
    return per_layer, total


@pytest.mark.parametrize("family", families.FAMILIES)
def test_bytes_per_layer_from_the_config_equal_the_written_checkpoint(family, tmp_path):
    families.build(family, dtype=torch.bfloat16).save_pretrained(tmp_path)
    per_layer, total = _header_bytes(tmp_path)
    for f in tmp_path.glob("*.safetensors"):  # the plan must not need the weights: config.json alone
        f.unlink()
    pm = load_plan_model(str(tmp_path), dtype="bfloat16")
    assert {i: pm.shape.layer_bytes(i) for i in range(pm.shape.num_layers)} == per_layer
    assert pm.shape.total_params * 2 == total
    assert pm.disk_bytes == total and pm.disk_layer_bytes is None  # estimated: same dtype as the file


def test_disk_bytes_from_headers_when_the_shards_are_there(tmp_path):
    families.build("qwen3_moe", dtype=torch.bfloat16).save_pretrained(tmp_path)
    per_layer, total = _header_bytes(tmp_path)
    pm = load_plan_model(str(tmp_path), dtype="float32")  # computed in float32: 2x the file per layer
    assert pm.disk_bytes == total and pm.disk_layer_bytes == per_layer
    assert pm.shape.layer_bytes(1) == 2 * per_layer[1]


@pytest.mark.parametrize("family", ["qwen3_moe", "qwen2_moe", "deepseek_v3", "mixtral", "olmoe"])
def test_flops_equal_a_flop_counter_on_the_model(family):
    """Matmul FLOPs counted by torch (experts run as per-expert matmuls) + 2 per token for every
    element a token passes that is not a matmul weight (norms, biases) = the plan's per-layer FLOPs."""
    model = families.build(family)
    model.set_experts_implementation("eager")
    ids = families.random_ids(samples=2, seq_len=16)
    tokens, seq_len = ids.numel(), ids.shape[1]
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(ids)  # sdpa on the CPU is not counted: attention is checked below
    matmul = sum(counter.get_flop_counts()["Global"].values())
    vectors = sum(t.numel() for k, t in model.state_dict().items() if ".layers." in k and t.dim() < 2)
    shape = model_shape(model)
    attention = tokens * 2 * shape.heads * (shape.qk_dim + shape.v_dim) * (seq_len + 1) / 2
    layers = tokens * sum(layer_flops_per_token(shape, x, seq_len) for x in shape.layers)
    assert layers - shape.num_layers * attention + tokens * head_flops_per_token(shape) == matmul + 2 * tokens * vectors


@pytest.mark.parametrize("family", ["qwen3_moe", "mixtral", "deepseek_v2"])
def test_attention_flops_are_the_causal_half_of_eager_attention(family):
    make_config, cls = families.CONFIGS[family]
    config = make_config()
    config.num_key_value_heads = config.num_attention_heads  # MLA's eager path wants as many kv heads
    model = cls(config).eval()
    model.set_attn_implementation("eager")
    ids = families.random_ids(samples=2, seq_len=16)
    T = ids.shape[1]
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(ids)
    full = sum(v for k, v in counter.get_flop_counts()["Global"].items() if "bmm" in str(k))  # QK^T and PV
    shape = model_shape(model)
    per_token = 2 * shape.heads * (shape.qk_dim + shape.v_dim) * (T + 1) / 2
    assert ids.numel() * per_token * shape.num_layers == pytest.approx(full * (T + 1) / (2 * T), rel=1e-9)


@pytest.mark.parametrize("name,published", [("Qwen/Qwen3-30B-A3B", 30.5e9), ("DeepSeek-V2-Lite", 15.7e9),
                                            ("mistralai/Mixtral-8x7B-v0.1", 46.7e9),
                                            ("deepseek-ai/DeepSeek-R1", 671e9)])  # fmt: skip
def test_shipped_configs_give_the_published_parameter_counts(name, published):
    """Offline (no hub): the paper's models from their shipped configs, against the model cards."""
    shape = load_plan_model(name, dtype="bfloat16").shape
    assert shape.total_params == pytest.approx(published, rel=0.005)


def _tiny_plan(memory_gb: float, offered: set[str]) -> dict:
    shape = model_shape(families.build("qwen3_moe"))
    dev = device("h100-80gb", memory_gb=memory_gb)
    return make_plan(shape, dev, [workload("profile", samples=8, seq_len=16)], batch=2,
                     offered={"profile": offered})  # fmt: skip


def test_modes_and_recommendations():
    roomy = _tiny_plan(80, {"--stream", "--batch-size"})["commands"]["profile"]
    assert roomy["recommended"]["mode"] == "in-memory"
    assert roomy["recommended"]["flags"] == ["--batch-size", "auto"]
    modes = roomy["modes"]
    weights = modes["in-memory"]["parts"]["weights"]
    assert modes["stream"]["peak_bytes"] < modes["in-memory"]["peak_bytes"]
    assert modes["stream"]["parts"]["layer"] < weights
    assert modes["stream"]["parts"]["hidden_states"] == 8 * 16 * 32 * 4  # samples x seq x hidden x fp32
    # memory between the streamed and the in-memory peak: only streaming fits
    between = (modes["stream"]["peak_bytes"] + modes["in-memory"]["peak_bytes"]) / 2 / GB
    tight = _tiny_plan(between, {"--stream"})["commands"]["profile"]
    assert not tight["modes"]["in-memory"]["fits"] and tight["modes"]["stream"]["fits"]
    assert tight["recommended"]["flags"] == ["--stream"]
    offline = _tiny_plan(between, set())["commands"]["profile"]  # a version without --stream / --device-map
    assert offline["recommended"]["mode"] is None
    assert "does not offer it" in offline["recommended"]["reason"]


def test_streamed_sinks_read_each_layer_once():
    """sinks --stream pushes every condition through a layer per load: one checkpoint read, and the
    hidden states of every condition (5: baseline, SEs pruned, 3 controls) between two layers."""
    shape = model_shape(families.build("qwen3_moe"))
    dev = device("h100-80gb", memory_gb=80)
    plan = make_plan(shape, dev, [workload("profile", samples=4, seq_len=16), workload("sinks", samples=4, seq_len=16),
                                  workload("prune-eval", samples=4, seq_len=16)], batch=1, disk_bytes=1e9)  # fmt: skip
    profile, sinks, prune = (plan["commands"][c]["modes"]["stream"]["parts"] for c in ("profile", "sinks", "prune-eval"))
    assert sinks["hidden_states"] == 5 * profile["hidden_states"] == 5 * 4 * 16 * 32 * 4
    assert sinks["read_s"] == profile["read_s"] and prune["read_s"] == 2 * profile["read_s"]


def test_device_table_and_overrides():
    assert device("H100-80GB").tflops == DEVICES["h100-80gb"].tflops
    assert device("cpu", memory_gb=12, bandwidth_gbs=7, tflops=0.1).memory_gb == 12
    with pytest.raises(UserError, match="unknown --hardware 'h100'.*Known: cpu"):
        device("h100")
    with pytest.raises(UserError, match="--tflops must be a finite positive number"):
        device("cpu", tflops=-1)
    with pytest.raises(UserError, match="--samples must be >= 1"):
        workload("profile", samples=0)


def test_cli_plan_offline_json(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["plan", "Qwen/Qwen3-30B-A3B", "--hardware", "h100-80gb", "--json", "--commands", "profile"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert "shipped" in plan["source"]
    assert plan["model"]["layers"] == 48 and len(plan["model"]["layer_bytes"]) == 48
    assert plan["commands"]["profile"]["recommended"]["mode"] is not None


@pytest.mark.parametrize(("args", "message"), [
    (["Qwen/Qwen3-30B-A3B", "--hardware", "tpu"], "unknown --hardware 'tpu'"),
    (["Qwen/Qwen3-30B-A3B", "--hardware", "cpu:0"], "'cpu:0' is a torch device; plan takes a hardware profile"),
    (["Qwen/Qwen3-30B-A3B", "--memory", "0"], "--memory must be a finite positive number"),
    (["Qwen/Qwen3-30B-A3B", "--batch-size", "x"], "--batch-size must be 'auto'"),
    (["Qwen/Qwen3-30B-A3B", "--commands", "profil"], "Did you mean 'profile'"),
    (["./no-such-model-here"], "is not a local folder"),
])  # fmt: skip
def test_cli_bad_input_exits_2_with_one_line(capsys, monkeypatch, args, message):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["plan", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("name", ["cuda", "cuda:1", "mps"])
def test_the_old_device_spelling_names_the_hardware_profiles(capsys, monkeypatch, name):
    """`plan --device` (the old spelling of --hardware) still works with a note; a torch device name given
    to it is refused with the hardware names plan knows (before: 'unknown --device')."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["plan", "Qwen/Qwen3-30B-A3B", "--device", "h100-80gb", "--json", "--commands", "profile"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["device"]["name"] == "h100-80gb"
    assert err == ("superexperts: note: --device is deprecated, use --hardware (the old spelling goes in the next "
                   "release).\n")  # fmt: skip
    assert main(["plan", "Qwen/Qwen3-30B-A3B", "--device", name]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("superexperts: note: --device is deprecated") and len(err) == 2
    assert err[1] == (f"superexperts plan: error: --hardware {name!r} is a torch device; plan takes a hardware "
                      f"profile name: {', '.join(DEVICES)}; or give --memory, --bandwidth and --tflops.")  # fmt: skip


def test_cli_folder_without_config_exits_2(tmp_path, capsys):
    assert main(["plan", str(tmp_path)]) == 2
    assert "no config.json" in capsys.readouterr().err


def test_activation_passes_add_to_the_products():
    """With the activation bandwidth unbounded the time is the plain roofline of the products; with a
    finite one it grows by the activation bytes over that bandwidth (they do not overlap the products)."""
    shape = model_shape(families.build("qwen3_moe"))
    w = workload("profile", samples=8, seq_len=16)
    fast, slow = device("cpu", activation_gbs=1e12), device("cpu", activation_gbs=1.0)
    t_fast, _ = forward_seconds(shape, fast, 32, 16, w)
    t_slow, _ = forward_seconds(shape, slow, 32, 16, w)
    roofline = sum(max(layer_weight_bytes_read(shape, x, 32) / (fast.bandwidth_gbs * GB),
                       32 * layer_flops_per_token(shape, x, 16) / (fast.tflops * 1e12)) for x in shape.layers)
    assert t_fast == pytest.approx(roofline, rel=1e-6)
    activations = sum(2 * 32 * layer_activation_bytes(shape, x) for x in shape.layers)
    assert t_slow - t_fast == pytest.approx(activations / GB, rel=1e-6)
    with pytest.raises(UserError, match="--activation-bandwidth must be a finite positive number"):
        device("cpu", activation_gbs=0)


def test_cli_plan_measures_this_machine(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(plan_measure, "SIZES", {"cpu": (128, 1 << 16)})  # small: the figures, not their accuracy
    assert main(["plan", "Qwen/Qwen3-30B-A3B", "--measure", "--tflops", "0.5", "--json", "--commands", "profile"]) == 0
    dev = json.loads(capsys.readouterr().out)["device"]
    assert "measured on this machine" in dev["note"]
    assert dev["tflops"] == 0.5  # an explicit figure beats the measured one
    assert dev["memory_gb"] == pytest.approx(total_ram() / 1e9)
    assert 0 < dev["activation_gbs"] < float("inf") and 0 < dev["bandwidth_gbs"] < float("inf")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device to measure")
def test_cli_measure_needs_the_device_here(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["plan", "Qwen/Qwen3-30B-A3B", "--hardware", "h100-80gb", "--measure"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no cuda device" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(("name", "says"), [
    ("nemotron_h", "layers without an MLP (Mamba/attention)"),  # hybrid: Mamba, attention and MoE layers
    ("qwen3_vl_moe", "vision-language: its language model is profiled on text"),
    ("qwen3_moe", "MoE layers of 8 experts (fused), 1 dense MLP layers"),
])  # fmt: skip
def test_cli_plan_says_supported_from_config_json_alone(name, says, tmp_path, capsys):
    import registry

    registry.tiny_config(registry.family(name)).save_pretrained(tmp_path)  # config.json only, no weights
    assert main(["plan", str(tmp_path), "--commands", "profile"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(f"supported: {name} (") and says in first


def test_cli_plan_says_not_supported_with_the_reason(tmp_path, capsys):
    import registry

    registry.tiny_config(registry.family("jetmoe")).save_pretrained(tmp_path)  # experts of its own layout
    assert main(["plan", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not supported: jetmoe (JetMoeForCausalLM)" in err and "no routed experts" in err
    assert len(err.splitlines()) == 1
