"""An independent RTN: numpy, one group at a time, written from the documented formula (no torch,
no compressed-tensors): scale = max|x| / ((2^b - 1) / 2), q = clip(round_half_even(x / scale),
-2^(b-1), 2^(b-1) - 1), x' = q * scale; a group of zeros stays zero."""

from __future__ import annotations

import numpy as np


def reference_rtn(x: np.ndarray, bits: int, group_size: int | None = None) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    rows = x.reshape(-1, x.shape[-1])
    out = np.empty_like(rows)
    size = group_size or rows.shape[1]
    q_min, q_max = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    for r in range(rows.shape[0]):
        for start in range(0, rows.shape[1], size):
            group = rows[r, start : start + size]
            scale = np.float32(np.abs(group).max()) / np.float32((q_max - q_min) / 2)
            if scale == 0:
                out[r, start : start + size] = 0.0
                continue
            q = np.clip(np.round(group / scale), q_min, q_max)  # np.round: half to even, as torch.round
            out[r, start : start + size] = q.astype(np.float32) * scale
    return out.reshape(x.shape)
