"""`stream_sinks`: attention-sink metrics and maps streamed one decoder layer at a time equal
`measure_sinks` / `attention_maps` on the loaded model (computed independently, in memory)."""

from __future__ import annotations

import pytest
import torch

import families
from superexperts.evaluate.sinks.maps import attention_maps
from superexperts.evaluate.sinks.measure import measure_sinks
from superexperts.scale.sinks import stream_sinks

# routed + shared experts (qwen2_moe); learned sink logits, sliding window and eager attention (gpt_oss)
CONDITIONS = {
    "qwen2_moe": {"one": [(1, 3)], "several": [(0, 1), (1, 5), (2, "shared")]},
    "gpt_oss": {"one": [(1, 3)], "several": [(0, 1), (1, 5), (3, 2)]},
}


def _close(got, want, name):
    got, want = torch.as_tensor(got, dtype=torch.float64), torch.as_tensor(want, dtype=torch.float64)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-6, equal_nan=True), name


@pytest.mark.parametrize("family", sorted(CONDITIONS))
def test_streamed_sinks_equal_in_memory(checkpoints, family):
    model, folder = checkpoints(family, "hub")
    ids = families.random_ids(samples=3, seq_len=20)
    conditions = CONDITIONS[family]
    want = measure_sinks(model, ids, conditions)
    got, maps = stream_sinks(folder, ids, conditions, dtype=torch.float32, map_ids=ids[:1, :12], map_layers=[1, 3],
                             map_conditions={"several": conditions["several"]})  # fmt: skip
    assert [c.name for c in got.conditions] == ["original", "one", "several"] == [c.name for c in want.conditions]
    assert got.sink_keys == want.sink_keys == [0]
    for g, w in zip(got.conditions, want.conditions):
        assert g.experts == w.experts
        _close(g.head_mass, w.head_mass, f"{g.name} sink mass per head")
        _close(g.sink_mass, w.sink_mass, f"{g.name} sink mass")
        _close(g.first_token_mass, w.first_token_mass, f"{g.name} first-token mass")
        assert g.sink_rate(0.3) == w.sink_rate(0.3), g.name
        assert g.sink_rate(0.05) == w.sink_rate(0.05), g.name
        assert (g.d_sink is None) == (w.d_sink is None) == (g.name == "original")
        if g.d_sink is not None:
            _close(g.d_sink, w.d_sink, f"{g.name} D_sink")
        _close(g.max_hidden, w.max_hidden, f"{g.name} max |hidden|")
        for k in ("q", "k", "v"):
            _close(g.norms[k], w.norms[k], f"{g.name} |{k}|")
    # the ablation acts in the streamed run: the pruned condition moves past the tolerance
    assert not torch.allclose(torch.tensor(got["several"].max_hidden), torch.tensor(got["original"].max_hidden))
    want_maps = attention_maps(model, ids[:1, :12], [1, 3], {"several": conditions["several"]})
    assert list(maps) == list(want_maps) == ["original", "several"]
    for name in maps:
        for layer in (1, 3):
            assert maps[name][layer].shape == want_maps[name][layer].shape
            _close(maps[name][layer], want_maps[name][layer], f"{name} map L{layer}")


def test_streamed_top_k_sink_keys_equal_in_memory(checkpoints):
    model, folder = checkpoints("qwen2_moe", "hub")
    ids = families.random_ids(samples=2, seq_len=16)
    want = measure_sinks(model, ids, {"one": [(1, 3)]}, top_k=3)
    got, maps = stream_sinks(folder, ids, {"one": [(1, 3)]}, top_k=3, dtype=torch.float32)
    assert got.sink_keys == want.sink_keys and len(got.sink_keys) == 3 and maps == {}
    for g, w in zip(got.conditions, want.conditions):
        _close(g.head_mass, w.head_mass, f"{g.name} sink mass per head")
        if g.d_sink is not None:
            _close(g.d_sink, w.d_sink, f"{g.name} D_sink")


def test_stream_sinks_refuses_a_missing_folder(tmp_path):
    from superexperts.runs.errors import UserError

    with pytest.raises(UserError, match="local checkpoint folder"):
        stream_sinks(tmp_path / "nothere", families.random_ids(1, 8))
