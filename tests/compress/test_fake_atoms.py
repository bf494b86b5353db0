"""Per-atom bit widths (issue 20): kept atoms stay exact, each tier is RTN of its own atoms alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rtn_reference import reference_rtn

import families
from superexperts.compress.quant import Scheme, fake_quantized
from superexperts.models.adapters import map_model
from superexperts.runs.errors import UserError

BITS = np.array([0, 8, 8, 8, 8, 0] + [2] * 10)  # 16 atoms: 0 and 5 kept, 1-4 at 8 bits, the rest at 2


def _gate_up_rows(family: str, ks: list[int], inter: int) -> list[int]:
    """Output rows of the (out, in) view of gate_up_proj[e] that belong to atoms `ks`."""
    if family == "gpt_oss":  # interleaved [g0, u0, g1, u1, ...]
        return [j for k in ks for j in (2 * k, 2 * k + 1)]
    return ks + [inter + k for k in ks]  # concatenated halves


@pytest.mark.parametrize("family", ["qwen3_moe", "gpt_oss"])
@torch.no_grad()
def test_atom_tiers_equal_independent_rtn(family):
    model = families.build(family)
    experts = map_model(model).block(1).experts
    transposed = bool(experts.is_transposed)
    gate_up, down = experts.gate_up_proj[3].clone(), experts.down_proj[3].clone()
    other = experts.down_proj[4].clone()
    with fake_quantized(model, [(1, 3), (1, 4)], Scheme(bits=4, group_size=8), atom_bits={(1, 3): BITS}):
        got_gu = (experts.gate_up_proj[3].T if transposed else experts.gate_up_proj[3]).clone()  # (out, in)
        got_down = (experts.down_proj[3].T if transposed else experts.down_proj[3]).clone()
        got_other = experts.down_proj[4].clone()
    gu_view, down_view = (gate_up.T, down.T) if transposed else (gate_up, down)
    inter = down_view.shape[1]
    for b in (0, 8, 2):
        ks = [int(k) for k in np.flatnonzero(BITS == b)]
        rows = _gate_up_rows(family, ks, inter)
        masked = torch.zeros_like(down_view)
        masked[:, ks] = down_view[:, ks]
        if b == 0:  # kept: exactly the original values
            assert torch.equal(got_gu[rows], gu_view[rows]) and torch.equal(got_down[:, ks], down_view[:, ks])
            continue
        want_gu = torch.from_numpy(reference_rtn(gu_view[rows].numpy(), b, 8))
        want_down = torch.from_numpy(reference_rtn(masked.numpy(), b, 8))[:, ks]  # the others do not enter the scales
        torch.testing.assert_close(got_gu[rows], want_gu, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(got_down[:, ks], want_down, rtol=1e-6, atol=1e-7)
    want_other = reference_rtn((other.T if transposed else other).numpy(), 4, 8)  # no atom widths: the scheme's
    torch.testing.assert_close(got_other, torch.from_numpy(want_other.T if transposed else want_other),
                               rtol=1e-6, atol=1e-7)  # fmt: skip
    assert torch.equal(experts.down_proj[3], down)  # restored


@torch.no_grad()
def test_uniform_atom_widths_equal_plain_quantization_and_shared_experts():
    model = families.build("qwen2_moe")
    ids = families.random_ids()
    scheme = Scheme(bits=4)
    with fake_quantized(model, [(1, 2), (1, "shared")], scheme):
        plain = model(ids).logits
    widths = {(1, 2): np.full(16, 4), (1, "shared"): np.full(24, 4)}
    with fake_quantized(model, [(1, 2), (1, "shared")], scheme, atom_bits=widths):
        assert torch.equal(model(ids).logits, plain)
    shared = map_model(model).block(1).shared
    before = shared.down_proj.weight.clone()
    with fake_quantized(model, [(1, "shared")], scheme, atom_bits={(1, "shared"): np.array([0] * 3 + [2] * 21)}):
        kept = shared.down_proj.weight[:, :3].clone()
        changed = not torch.equal(shared.down_proj.weight[:, 3:], before[:, 3:])
    assert torch.equal(kept, before[:, :3]) and changed and torch.equal(shared.down_proj.weight, before)


@pytest.mark.parametrize("widths, scheme, match", [
    ({(1, 3): np.full(15, 4)}, Scheme(bits=4), "15 atom widths for 16 atoms"),
    ({(1, 3): np.full(16, 5)}, Scheme(bits=4), "5 bits is not supported"),
    ({(1, 3): np.full(16, 4)}, Scheme(bits=4, act_bits=8), "drop --act-bits"),
])  # fmt: skip
def test_bad_widths_are_refused(widths, scheme, match):
    with pytest.raises(UserError, match=match), fake_quantized(families.build("qwen3_moe"), [(1, 3)], scheme,
                                                               atom_bits=widths):  # fmt: skip
        pass
