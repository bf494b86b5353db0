"""`superexperts sinks` end to end on the demo, and bad input that must leave nothing behind."""

from __future__ import annotations

import json

import pytest

from superexperts.cli import main

TEXT = "The quick brown fox , jumps over the lazy dog . The end of the story is near"


def test_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "sinks"
    code = main(["sinks", "--text", TEXT, "--experts", "1:13", "--random", "1", "--layers", "4", "--heads", "0,3",
                 "--out", str(out)])  # one SE layer: no layer-wise conditions, keeps the test short
    assert code == 0
    data = json.loads((out / "sinks.json").read_text())
    names = [c["name"] for c in data["conditions"]]
    assert names == ["original", "super", "random-0"]
    original, super_ = data["conditions"][0], data["conditions"][1]
    assert "d_sink" not in original and len(super_["d_sink"]) == len(original["sink_mass"]) == 8
    assert super_["experts"] == [{"layer": 1, "expert": 13}]
    assert data["conditions"][2]["experts"][0]["layer"] in range(8)
    assert 0.0 <= original["sink_rate"] <= 1.0
    assert "t > 0" in data["query_aggregation"]
    assert data["command"] == "sinks" and data["synthetic"] is True and data["data_sha256"]
    assert [r["expert"] for r in data["router"]] == [13]
    for name in ("sinks_chain", "sinks_d_sink", "sinks_maps"):
        assert (out / f"{name}.png").stat().st_size > 0 and (out / f"{name}.svg").stat().st_size > 0
    assert "mean D_sink" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--layers", "99"], "--layers [99] out of range"),
    (["--heads", "4"], "--heads [4] out of range"),
    (["--layers", "a,b"], "expected integers"),
    (["--text", "   "], "--text is empty"),
    (["--experts", "1:999"], "out of range"),
    (["--random", "-1"], "--random must be >= 0"),
    (["--sink-keys", "top0"], "--sink-keys"),
    (["--epsilon", "1.5"], "--epsilon"),
    (["--from", "/nonexistent/run"], "no super_experts.json"),
])  # fmt: skip
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "sinks"
    assert main(["sinks", "--text", TEXT, *argv, "--out", str(out)] if "--text" not in argv
                else ["sinks", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not out.exists() or not any(out.iterdir())


def test_prune_super_on_a_real_model_needs_the_se_list(tmp_path, capsys):
    assert main(["sinks", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "--from RUN_DIR" in capsys.readouterr().err


def test_from_run_dir_gives_model_and_super_experts(tmp_path, monkeypatch):
    from superexperts.cli.sinks import build_args, request
    from superexperts.recipes import attention_sinks

    # The models named here do not exist: skip the config read and run/model check (the catalogue tests those).
    monkeypatch.setattr(attention_sinks.SinksRequest, "checks_config", lambda *a: None)
    monkeypatch.setattr(attention_sinks, "check_run_model", lambda *a: None)
    from superexperts.models.adapters import map_model
    from superexperts.models.demo import build_demo
    from superexperts.models.experts import validate_experts

    (tmp_path / "profile.json").write_text(json.dumps({"meta": {"synthetic": False, "model_path": "/ckpt/qwen"}}))
    (tmp_path / "super_experts.json").write_text(json.dumps({"super_experts": [{"layer": 2, "expert": 41}]}))
    req = request(build_args(["--from", str(tmp_path)]))
    assert req.model == "/ckpt/qwen"
    assert request(build_args(["/other", "--from", str(tmp_path)])).model == "/other"
    model, _ = build_demo()
    assert req.experts() == [(2, 41)]
    listed = request(build_args(["--experts", "1:13,1:13"])).experts()
    assert validate_experts(map_model(model), listed) == [(1, 13)]


def test_attention_that_bypasses_the_registry_is_explained():
    """Remote-code models may hard-code their attention: nothing is recorded, and the user is told why."""
    import types

    import torch

    import families
    from superexperts.evaluate.sinks.measure import measure_sinks
    from superexperts.runs.errors import UserError

    model = families.build("qwen3_moe")
    for layer in model.model.layers:
        layer.self_attn.forward = types.MethodType(lambda self, hidden_states, **kw: (hidden_states * 0, None),
                                                   layer.self_attn)
    with pytest.raises(UserError, match="never called the attention registry"):
        measure_sinks(model, torch.ones(1, 6, dtype=torch.long))


def test_text_of_one_token_is_refused():
    import types

    import torch

    from superexperts.cli.sinks import build_args, request
    from superexperts.recipes.attention_sinks import input_ids
    from superexperts.runs.errors import UserError

    one_token = types.SimpleNamespace  # a tokenizer without BOS that turns "Hi" into one id
    tokenizer = lambda text, return_tensors: one_token(input_ids=torch.tensor([[7]]))
    with pytest.raises(UserError, match="at least 2"):
        input_ids(request(build_args(["--text", "Hi"])), tokenizer)
