"""Round-to-nearest (RTN) fake quantization with compressed-tensors' own primitives.

Symmetric integer RTN as llm-compressor's `QuantizationModifier` applies it (without GPTQ), with
compressed-tensors' `calculate_qparams` and `fake_quantize`: per row (an output channel of a
weight, a token of an activation) or per group of G input columns,

    scale = max|x| / ((q_max - q_min) / 2),   q = clamp(round(x / scale), q_min, q_max),   x' = q * scale

with [q_min, q_max] = [-2^(b-1), 2^(b-1) - 1]. In this convention a group's positive maximum
lands on q_max, i.e. it keeps (2^b - 2) / (2^b - 1) of its value (93% at 4 bits, 67% at 2 bits);
a negative maximum sits on the tie between q_min and q_min + 1, and float rounding of the scale
decides (mostly q_min: (2^b) / (2^b - 1) of its value, else clipped like a positive one). So a
super weight, usually its group's maximum, is changed by up to 1/(2^b - 1) of itself by rounding
alone. Computed in float32, cast back to the input's dtype.

    >>> w_fq = fake_quantize_rows(w, bits=4, group_size=128)   # w (..., out, in)
"""

from __future__ import annotations

import torch

from ...runs.errors import UserError
from .scheme import Scheme, library


@torch.no_grad()
def fake_quantize_rows(x: torch.Tensor, bits: int, group_size: int | None = None) -> torch.Tensor:
    """Quantize and dequantize each row of `x` (..., columns), per group of `group_size` columns
    (None: one scale per row). Same shape and dtype as `x`."""
    ct = library()
    columns = x.shape[-1]
    if group_size is not None and columns % group_size:
        raise UserError(f"--group-size {group_size} does not divide the input size {columns}; "
                        "pick a divisor of it, or omit --group-size for per-channel scales.")  # fmt: skip
    rows = x.reshape(-1, columns).float()  # (rows, columns)
    strategy = "group" if group_size else "channel"
    args = ct.QuantizationArgs(num_bits=bits, type="int", symmetric=True, strategy=strategy, group_size=group_size)
    groups = rows.unflatten(-1, (-1, group_size or columns))  # (rows, groups, group columns)
    scale, zero_point = ct.utils.calculate_qparams(groups.amin(-1), groups.amax(-1), args)  # (rows, groups)
    return ct.fake_quantize(rows, scale, zero_point, args).reshape(x.shape).to(x.dtype)


def fake_quantize_weight(weight: torch.Tensor, scheme: Scheme, *, transposed: bool = False) -> torch.Tensor:
    """A weight (..., out, in) quantized along its input dim; `transposed` weights are (..., in, out)
    (GPT-OSS and Llama4 fused experts)."""
    if transposed:
        return fake_quantize_rows(weight.transpose(-1, -2), scheme.bits, scheme.group_size).transpose(-1, -2)
    return fake_quantize_rows(weight, scheme.bits, scheme.group_size)
