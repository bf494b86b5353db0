"""The quantization scheme a request names (`Scheme`: bits, groups, activation bits), checked without
torch; `rtn` applies it with compressed-tensors' primitives."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

from ...runs.errors import UserError

MISSING = "quant-eval uses compressed-tensors' RTN primitives: pip install 'superexperts[quant]'."
BITS = (8, 4, 3, 2)
ACT_BITS = (8, 4)
LIBRARY = "compressed-tensors"


@dataclass(frozen=True)
class Scheme:
    """What is quantized: expert weights to `bits` (one scale per output channel, or per group of
    `group_size` input columns) and, with `act_bits`, each token's down_proj input."""

    bits: int = 4
    group_size: int | None = None  # None: per output channel
    act_bits: int | None = None

    def check(self) -> None:
        if self.bits not in BITS:
            raise UserError(f"--bits {self.bits} is not supported; use one of {', '.join(map(str, BITS))}.")
        if self.group_size is not None and self.group_size < 1:
            raise UserError(f"--group-size must be >= 1, got {self.group_size}; omit it for per-channel scales.")
        if self.act_bits is not None and self.act_bits not in ACT_BITS:
            raise UserError(f"--act-bits {self.act_bits} is not supported; use 8 or 4 (or omit it).")
        if importlib.util.find_spec("compressed_tensors") is None:  # installed? (importing it imports torch)
            raise UserError(MISSING)

    def describe(self) -> dict[str, Any]:
        from importlib.metadata import version

        return {"method": "RTN (round to nearest), symmetric int", "bits": self.bits,
                "granularity": f"group of {self.group_size} input columns" if self.group_size else "output channel",
                "group_size": self.group_size, "act_bits": self.act_bits,
                "act_granularity": "per token, down_proj input" if self.act_bits else None,
                "library": f"{LIBRARY} {version(LIBRARY)}"}  # fmt: skip

    def label(self) -> str:
        """'W4 g128 A8' style short name."""
        weights = f"W{self.bits}" + (f" g{self.group_size}" if self.group_size else " per-channel")
        return weights + (f" A{self.act_bits}" if self.act_bits else "")


def library():
    """compressed-tensors' quantization module, or a UserError saying how to install it."""
    try:
        from compressed_tensors import quantization
    except ImportError:
        raise UserError(MISSING)
    return quantization
