"""Below the expert: which atoms write a Super Expert's outlier, and the atom criteria (issue 20).

Pure functions over `Profile.atom_stats` (capture/atoms.py); docs/atoms.md says where we follow
CAMERA (arXiv 2508.02322) and HEAPr (arXiv 2509.22299) and where we differ.

    >>> super_atoms(np.array([0.1, 9.0, -0.2, 0.5]))
    [{'atom': 1, 'share': 0.9574}, ...]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..runs.errors import UserError

if TYPE_CHECKING:  # pandas where a table is computed: the request's checks import this module before it
    import pandas as pd

COVER = 0.9  # the super atoms carry at least this share of the SE's output (issue 20)
KEYS = ["layer", "expert", "kind", "atom"]


def super_atoms(contributions: np.ndarray | pd.Series, *, cover: float = COVER) -> list[dict[str, Any]]:
    """The fewest atoms whose contributions a[t*, k] * w_k[c*] cover >= `cover` of the output they sum to,
    largest share first: [{"atom": k, "share": c_k / sum_j c_j}, ...].

    Shares are signed: an atom that pulls against the outlier has a negative share and is never needed
    (the positive shares alone sum to >= 1). The down projection's bias (GPT-OSS) is not an atom and is
    left out of the sum. An expert whose atoms sum to 0 has no super atoms ([]).
    """
    c = np.asarray(contributions, dtype=np.float64)
    total = c.sum()
    if c.size == 0 or not np.isfinite(total) or total == 0:
        return []
    shares = c / total
    order = np.argsort(-shares, kind="stable")
    reached = np.cumsum(shares[order]) >= cover - 1e-12  # reached within the positive shares
    count = int(np.argmax(reached)) + 1 if reached.any() else c.size
    return [{"atom": int(k), "share": round(float(shares[k]), 6)} for k in order[:count]]


def expert_atoms(atom_stats: pd.DataFrame, layer: int, kind: str, expert: int) -> pd.DataFrame:
    """The atom rows of one expert (`expert` -1 for a shared expert, as in expert_stats), by atom: row k
    is atom k (the tracker records every atom of an expert)."""
    rows = atom_stats[(atom_stats["layer"] == layer) & (atom_stats["kind"] == kind) & (atom_stats["expert"] == expert)]
    return rows.sort_values("atom")


def super_atoms_of(atom_stats: pd.DataFrame, layer: int, kind: str, expert: int, *,
                   cover: float = COVER) -> list[dict[str, Any]] | None:  # fmt: skip
    """`super_atoms` of one expert from the atom table; None when the run recorded no atoms for it."""
    rows = expert_atoms(atom_stats, layer, kind, expert)
    return None if rows.empty else super_atoms(rows["contribution"].to_numpy(), cover=cover)


def check_rho(rho: float) -> None:
    """The one check of --rho, CAMERA's mix weight of its sum and max terms."""
    if not 0 <= rho <= 1:
        raise UserError(f"--rho {rho} must be in [0, 1] (CAMERA's weight of the max term; its run script uses 0.9).")


def camera_scores(atom_stats: pd.DataFrame, rho: float = 0.9) -> pd.DataFrame:
    """CAMERA's micro-expert energy ||w_k||^2 ((1 - rho) sum_t (r a)^2 + rho max_t (r a)^2), ranked per MoE
    layer as CAMERA-P prunes (the lowest int(n * ratio) of each layer go): `rank` 1 = the highest score
    of its layer, `layer_fraction` = (rank - 1) / atoms in the layer. Routed and shared atoms are ranked
    together, as CAMERA does for models with shared experts. Sorted by layer, then score descending.
    """
    check_rho(rho)
    table = atom_stats[KEYS].copy()
    table["camera"] = (1.0 - rho) * atom_stats["camera_sum"] + rho * atom_stats["camera_max"]
    table = table.sort_values(["layer", "camera"], ascending=[True, False], kind="stable", na_position="last")
    table["rank"] = table.groupby("layer").cumcount() + 1
    table["layer_fraction"] = (table["rank"] - 1) / table.groupby("layer")["rank"].transform("size")
    return table.reset_index(drop=True)


def se_super_atoms(verdict_rows: pd.DataFrame, atom_stats: pd.DataFrame) -> list[dict[str, Any]]:
    """Per SE row (layer, kind, expert, ...) with recorded atoms: {"se": the row, "shares": (I,) each atom's
    share of the output at (t*, c*) by atom index, "super_atoms": `super_atoms`}."""
    out = []
    for r in verdict_rows.itertuples():
        rows = expert_atoms(atom_stats, int(r.layer), r.kind, int(r.expert))
        if rows.empty:
            continue
        contributions = rows["contribution"].to_numpy(dtype=np.float64)  # by atom: expert_atoms sorts them
        total = contributions.sum()
        shares = contributions / total if total else np.zeros_like(contributions)
        out.append({"se": r, "shares": shares, "super_atoms": super_atoms(contributions)})
    return out


def super_atoms_json(verdict_rows: pd.DataFrame, atom_stats: pd.DataFrame) -> list[list[dict[str, Any]] | None]:
    """`super_atoms` of each SE row (layer, kind, expert) of a verdict, in order (None without atoms)."""
    if atom_stats is None or atom_stats.empty:
        return [None] * len(verdict_rows)
    return [super_atoms_of(atom_stats, int(r.layer), r.kind, int(r.expert)) for r in verdict_rows.itertuples()]
