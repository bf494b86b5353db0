"""FP8/MXFP4 tensors are checked against the quantization config before use, in memory as in
streaming: one line naming the tensor (issue 23 item 5). And `plan` plans both formats."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import families
from superexperts.cli import main
from superexperts.models.loading import load_model
from superexperts.runs.errors import UserError
from superexperts.scale import stream_profile

IDS = families.random_ids(samples=2, seq_len=16)
MX = "model.layers.1.mlp.experts.down_proj"
FP8 = "model.layers.2.mlp.experts.6.down_proj.weight"  # [hidden 256, moe 128]: 2 x 1 blocks of 128


def _rewrite(folder, key, change):
    """`folder` with tensor `key` replaced by `change(tensor)` in whichever shard holds it."""
    for path in folder.glob("*.safetensors"):
        with safe_open(path, framework="pt") as f:
            names = list(f.keys())
            if key not in names:
                continue
            tensors = {k: f.get_tensor(k) for k in names}
        tensors[key] = change(tensors[key]).contiguous()
        save_file(tensors, path, metadata={"format": "pt"})
        return folder
    raise AssertionError(f"{key} not in {folder}")


DAMAGES = [
    ("gpt_oss_mxfp4", f"{MX}_blocks", lambda t: t.float(), "is F32"),  # float codes would be read as numbers
    ("gpt_oss_mxfp4", f"{MX}_blocks", lambda t: t[..., :8], "blocks are U8"),
    ("gpt_oss_mxfp4", f"{MX}_scales", lambda t: t[..., :1], "one exponent per block"),
    ("gpt_oss_mxfp4", f"{MX}_scales", lambda t: t.to(torch.int32), "has scales"),
    ("qwen3_fp8", f"{FP8}_scale_inv", lambda t: torch.ones(3, 3), "need [2, 1]"),
    ("qwen3_fp8", f"{FP8}_scale_inv", lambda t: t.to(torch.int32), "FP8 scales are floats"),
    ("qwen3_fp8", FP8, lambda t: t.float(), "is F32 but has a weight_scale_inv"),
]


@pytest.mark.parametrize(("fixture", "key", "change", "message"), DAMAGES)
@pytest.mark.parametrize("way", ["in memory", "stream"])
def test_bad_quantized_tensor_is_one_line_naming_it(request, tmp_path, fixture, key, change, message, way):
    folder = _rewrite(shutil.copytree(request.getfixturevalue(fixture), tmp_path / "damaged"), key, change)
    with pytest.raises(UserError) as info:
        if way == "stream":
            stream_profile(folder, IDS)
        else:
            load_model(str(folder), device="cpu")
    text = str(info.value)
    tensor = key.removesuffix("_scale_inv") if "weight_scale_inv but" not in message else key
    assert message in text and repr(tensor) in text.replace(f"{tensor}_scale_inv", tensor), text
    assert "\n" not in text


def test_intact_quantized_checkpoints_pass_the_checks(qwen3_fp8, gpt_oss_mxfp4):
    from superexperts.models.checkpoints.files import read_tensor_index
    from superexperts.models.checkpoints.formats import check_quantized_tensors
    from superexperts.models.loading import load_config

    for folder in (qwen3_fp8, gpt_oss_mxfp4):
        check_quantized_tensors(folder, read_tensor_index(folder), load_config(str(folder), False))


@pytest.mark.parametrize("fixture", ["qwen3_fp8", "gpt_oss_mxfp4"])
def test_plan_plans_published_quantized_checkpoints(request, capfd, fixture):
    import json

    from superexperts.models.checkpoints.files import read_tensor_index

    folder = request.getfixturevalue(fixture)
    assert main(["plan", str(folder), "--json", "--commands", "profile"]) == 0
    out, err = capfd.readouterr()
    plan = json.loads(out)
    on_disk = sum(t.end - t.start for t in read_tensor_index(folder).values())
    assert plan["disk_bytes"] == on_disk  # read from the headers: the quantized bytes, not an estimate
    assert "on disk: safetensors headers" in plan["source"]
    assert err == ""
