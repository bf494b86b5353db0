"""RTN fake quantization: compressed-tensors' primitives as we call them equal an independent numpy RTN."""

from __future__ import annotations

import pytest
import torch
from rtn_reference import reference_rtn

from superexperts.compress.quant import Scheme, fake_quantize_rows, fake_quantize_weight
from superexperts.runs.errors import UserError


@pytest.mark.parametrize("bits", [8, 4, 3, 2])
@pytest.mark.parametrize("group_size", [None, 4, 16])
def test_rtn_equals_independent_numpy(bits, group_size):
    x = torch.randn(5, 3, 32, generator=torch.Generator().manual_seed(bits)) * 3
    x[0, 0, :16] = 0.0  # an all-zero group must stay zero (no 0/0)
    got = fake_quantize_rows(x, bits, group_size)
    want = torch.from_numpy(reference_rtn(x.numpy(), bits, group_size))
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    assert not torch.equal(got, x) and torch.equal(got[0, 0, :16], torch.zeros(16))


@pytest.mark.parametrize("bits", [4, 2])
def test_sign_of_the_largest_weight(bits):
    """The symmetric convention: a positive group maximum lands on q_max (clipped); a negative one sits on
    the tie between q_min and q_min + 1, so float rounding of the scale decides (grown or clipped)."""
    row = torch.tensor([[1.0, 0.1, -0.2, 0.3], [-1.0, 0.1, -0.2, 0.3]])
    out = fake_quantize_rows(row, bits)
    n = 2**bits - 1
    assert out[0, 0].item() == pytest.approx((n - 1) / n)
    assert min(abs(out[1, 0].item() + (n + 1) / n), abs(out[1, 0].item() + (n - 1) / n)) < 1e-6


def test_dtype_and_transposed_layout():
    w = torch.randn(2, 8, 12, dtype=torch.bfloat16)
    out = fake_quantize_weight(w, Scheme(bits=4, group_size=4))
    assert out.dtype == torch.bfloat16 and out.shape == w.shape
    want = reference_rtn(w.float().numpy(), 4, 4)
    torch.testing.assert_close(out.float(), torch.from_numpy(want).bfloat16().float())
    t = fake_quantize_weight(w.transpose(-1, -2).contiguous(), Scheme(bits=4, group_size=4), transposed=True)
    assert torch.equal(t.transpose(-1, -2), out)  # (in, out) storage quantized along `in`


@pytest.mark.parametrize("scheme, message", [
    (Scheme(bits=5), "--bits 5"),
    (Scheme(bits=4, act_bits=2), "--act-bits 2"),
    (Scheme(bits=4, group_size=0), "--group-size must be >= 1"),
])  # fmt: skip
def test_bad_scheme(scheme, message):
    with pytest.raises(UserError, match=message):
        scheme.check()


def test_group_size_must_divide():
    with pytest.raises(UserError, match="does not divide the input size 12"):
        fake_quantize_rows(torch.randn(2, 12), 4, 5)
