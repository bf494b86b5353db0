"""Bit widths per atom (issue 20): CAMERA-Q's score tiers, kept super atoms, the average bits.

CAMERA-Q (arXiv 2508.02322; described, not in its public code) gives the micro-experts of each MoE
layer mixed precision by their CAMERA score: with `--bits 8,4,2 --bits-ratio 0.1,0.3,0.6` the top
10% of a layer's atoms get 8 bits, the next 30% 4 bits, the rest 2 bits. Tier sizes are
int(n * ratio) for all but the last tier, which takes the remainder; ties are broken by
(layer, expert, atom). A width of 0 means kept unquantized (`--protect super-atoms`).

>>> widths = camera_q_bits(scores, [8, 4, 2], [0.1, 0.3, 0.6])   # (layer, expert, atom, bits)
>>> atom_bits = atom_bits_of(widths, sizes, keep={(1, 13): [0]})  # {expert: widths}, super atom kept
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from ...identify.atom_pruning import routed_scores
from ...models.experts import Expert
from ...runs.errors import UserError
from .scheme import BITS

if TYPE_CHECKING:  # pandas where widths are computed: --bits/--bits-ratio are checked before it
    import pandas as pd


def check_tiers(bits: list[int], ratios: list[float]) -> None:
    """--bits and --bits-ratio of --scheme camera-q, before any model loads."""
    if len(bits) < 2 or len(bits) != len(ratios):
        raise UserError(f"--scheme camera-q needs as many --bits as --bits-ratio values (at least 2), got bits "
                        f"{','.join(map(str, bits))} and ratios {','.join(map(str, ratios))}; e.g. --bits 8,4,2 "
                        "--bits-ratio 0.1,0.3,0.6.")  # fmt: skip
    bad = [b for b in bits if b not in BITS]
    if bad:
        raise UserError(f"--bits {bad[0]} is not supported; use {', '.join(map(str, BITS))}.")
    if any(r <= 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-6:
        raise UserError(f"--bits-ratio {','.join(map(str, ratios))} must be positive shares that sum to 1, "
                        "e.g. 0.1,0.3,0.6.")  # fmt: skip


def camera_q_bits(scores: pd.DataFrame, bits: list[int], ratios: list[float]) -> pd.DataFrame:
    """(layer, expert, atom, bits) of every routed atom of the score table: per MoE layer, the highest
    scores get the first width."""
    import pandas as pd

    check_tiers(bits, ratios)
    table = routed_scores(scores)
    parts = []
    for _, group in table.groupby("layer", sort=True):
        ranked = group.sort_values(["score", "layer", "expert", "atom"], ascending=[False, True, True, True],
                                   kind="stable")  # fmt: skip
        sizes = [int(len(ranked) * r) for r in ratios[:-1]]
        widths = np.repeat(bits, sizes + [len(ranked) - sum(sizes)])
        parts.append(ranked[["layer", "expert", "atom"]].assign(bits=widths))
    return pd.concat(parts).sort_values(["layer", "expert", "atom"]).reset_index(drop=True)


def atom_bits_of(widths: pd.DataFrame | None, sizes: Mapping[Expert, int], *, keep: Mapping[Expert, list[int]],
                 default: int | None = None) -> dict[Expert, np.ndarray]:  # fmt: skip
    """{expert: width per atom} for `fake_quantized(atom_bits=...)`: from `widths` (camera_q_bits), or
    `default` for the experts of `keep` alone; the atoms of `keep` get 0 (kept unquantized)."""
    out: dict[Expert, np.ndarray] = {}
    if widths is not None:
        for (layer, e), group in widths.groupby(["layer", "expert"], sort=True):
            arr = np.zeros(sizes[(int(layer), int(e))], dtype=np.int64)
            arr[group["atom"].to_numpy()] = group["bits"].to_numpy()
            out[(int(layer), int(e))] = arr
    for expert, ks in keep.items():
        if expert not in out:
            if default is None:
                raise UserError(f"expert {expert[0]}:{expert[1]} has no atom widths; it is not in the score table.")
            out[expert] = np.full(sizes[expert], default, dtype=np.int64)
        out[expert][list(ks)] = 0
    return out


def average_bits(sizes: Mapping[Expert, int], quantized: list[Expert], bits: int,
                 atom_bits: Mapping[Expert, np.ndarray], kept_bits: int) -> float:  # fmt: skip
    """Mean bits per expert weight over every expert of `sizes`: an atom holds the same number of
    weights (its gate and up rows, its down column: 3 x hidden) in every expert, so this is the mean
    over atoms of their width - `atom_bits` where given (0: kept), `bits` for the other quantized
    experts, `kept_bits` (the model's dtype) for the rest."""
    chosen = set(quantized)
    total = 0.0
    for expert, n in sizes.items():
        if expert in atom_bits and expert in chosen:
            widths = np.asarray(atom_bits[expert])
            total += float(np.where(widths == 0, kept_bits, widths).sum())
        else:
            total += n * (bits if expert in chosen else kept_bits)
    return total / sum(sizes.values())
