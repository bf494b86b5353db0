"""Layer statistics of hidden states that are not [batch, tokens, hidden]: DeepSeek-V4 keeps several
residual streams per token ([batch, tokens, streams, hidden]); a shape with no (batch, tokens) axes is
refused in one line naming the family and the shape."""

from __future__ import annotations

import pytest
import torch

import families
import registry
from superexperts import profile
from superexperts.capture.tracker import token_rows
from superexperts.models.adapters import map_model
from superexperts.runs.errors import UserError


@pytest.mark.parametrize("shape, axes", [((2, 5, 3, 4), (0, 1)), ((3, 2, 5, 4), (1, 2)), ((2, 5, 4), (0, 1))])
def test_token_rows_put_every_element_under_its_token(shape, axes):
    hidden = torch.randn(shape)
    rows, streams = token_rows(hidden, 2, 5)
    assert streams == hidden.numel() // (10 * 4)
    for token in range(10):
        sample, position = divmod(token, 5)
        index = [slice(None)] * (len(shape) - 1)
        index[axes[0]], index[axes[1]] = sample, position
        expected = hidden[tuple(index)].reshape(-1, 4)  # every stream of this token
        assert torch.equal(rows[token * streams : (token + 1) * streams], expected)


def test_token_rows_without_batch_and_token_axes_is_none():
    assert token_rows(torch.randn(5, 2, 4), 2, 5) is None


def test_deepseek_v4_layer_stats_match_the_layer_outputs():
    model = registry.build(registry.family("deepseek_v4"))
    ids = families.random_ids(samples=3, seq_len=8)
    layers = map_model(model).layers
    outputs: dict[int, list[torch.Tensor]] = {}
    hooks = [layer.register_forward_hook(lambda m, a, out, i=i: outputs.setdefault(i, []).append(out.detach()))
             for i, layer in enumerate(layers)]  # fmt: skip
    with torch.no_grad():
        for batch in ids.split(1):
            model(input_ids=batch, use_cache=False)
    for h in hooks:
        h.remove()
    assert outputs[0][0].dim() == 4  # [batch, tokens, streams, hidden]: the case under test
    prof = profile(model, ids, batch_size=1)
    for row in prof.layer_stats.itertuples():
        out = torch.cat(outputs[row.layer])  # (samples, tokens, streams, hidden)
        top = out.abs().amax(2)  # (samples, tokens, hidden): the largest stream of each element
        sample, position, channel = (int(i) for i in torch.nonzero(top == top.max())[0])
        assert row.top1_abs == pytest.approx(top.max().item(), rel=1e-6)
        assert (row.top1_sample, row.top1_position, row.top1_channel) == (sample, position, channel)


def test_unmappable_hidden_states_are_refused_in_one_line():
    model = families.build("qwen3_moe")
    last = map_model(model).layers[-1]
    handle = last.register_forward_hook(lambda m, a, out: out.transpose(0, 1))  # (tokens, batch, hidden)
    try:
        with pytest.raises(UserError, match=r"qwen3_moe: .* shape \(8, 2, 32\)") as e:
            profile(model, families.random_ids(samples=2, seq_len=8), batch_size=2)
    finally:
        handle.remove()
    assert "\n" not in str(e.value)
