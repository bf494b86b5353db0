"""Hand-made expert tables (the profile's `expert_stats` shape) for tests of pure table functions."""

from __future__ import annotations

import numpy as np
import pandas as pd

from superexperts.capture.profile import EXPERT_COLUMNS


def expert_table(values: np.ndarray, shared: dict[int, float] | None = None,
                 dense: dict[int, float] | None = None) -> pd.DataFrame:
    """values[layer, expert] = a[l,e] for routed experts; shared/dense map layer -> a of that layer's
    shared expert / dense MLP (expert -1). A dense layer's routed row should be NaN (skipped)."""
    rows = []
    for layer, row in enumerate(np.asarray(values, dtype=np.float64)):
        for expert, a in enumerate(row):
            if np.isfinite(a):
                rows.append(_row(layer, expert, "routed", a))
        for kind, extra in (("shared", shared), ("dense", dense)):
            if extra and layer in extra:
                rows.append(_row(layer, -1, kind, extra[layer]))
    return pd.DataFrame(rows, columns=EXPERT_COLUMNS)


def _row(layer: int, expert: int, kind: str, a: float) -> dict:
    return {"layer": layer, "expert": expert, "kind": kind, "max_abs_output": float(a),
            "max_output": -float(a),
            "channel": 7, "sample": 0, "position": 0, "token_id": 1, "token_text": "<s>",
            "max_abs_input": 1.0, "tokens_routed": 10, "nonfinite_rows": 0}  # fmt: skip


def background(layers: int, experts: int, seed: int = 0, sigma: float = 0.6) -> np.ndarray:
    """Log-normal a[l,e] of ordinary experts (values around 1)."""
    return np.random.default_rng(seed).lognormal(0.0, sigma, size=(layers, experts))


def layer_stats(num_layers: int) -> pd.DataFrame:
    """A layer table with the profile's columns (the rules do not read it; run folder and report do)."""
    table = pd.DataFrame({"layer": range(num_layers)})
    for k in (1, 2, 3):
        table[[f"top{k}_abs", f"top{k}_channel", f"top{k}_sample", f"top{k}_position"]] = [1.0 / k, k, 0, 0]
        table[f"top{k}_token_text"] = "<s>"
    return table.assign(median_abs=0.1, nonfinite=0, massive=False)


def save_table_run(out_dir, table: pd.DataFrame, num_layers: int, **meta) -> None:
    """A run folder (profile.json, super_experts.json, expert_stats.csv/.parquet) for a hand-made table."""
    from superexperts.capture.profile import Profile
    from superexperts.identify.profile_run import save_run
    from superexperts.identify.rules import paper

    prof = Profile(table, layer_stats(num_layers), {"num_layers": num_layers, **meta})
    save_run(out_dir, prof, paper(table, num_layers))


def snapshot(folder) -> dict[str, bytes]:
    """Every file in a folder and its bytes: to check that bad input changed nothing."""
    from pathlib import Path

    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}
