"""Do runs agree on the SEs? Pure comparison of expert tables and SE sets.

    >>> result = compare([RunSEs("c4", table_a, [(1, 68)]), RunSEs("wiki", table_b, [(1, 68)])])
    >>> result.agree, result.pairs[["jaccard", "spearman"]].iloc[0].tolist()
    (True, [1.0, 0.93])

Jaccard overlap |A & B| / |A | B| of the SE sets (1 when both are empty) and Spearman's rank
correlation of a[l,e] over the (layer, expert) keys both runs measured (dense MLPs left out).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from ..models.experts import Expert, experts_json, format_experts
from ..runs.errors import UserError
from .rules import expert_label


@dataclass(frozen=True)
class RunSEs:
    """One run: a name, its expert table and the SEs it found."""

    name: str
    table: pd.DataFrame
    experts: list[Expert]


@dataclass(frozen=True)
class Comparison:
    """pairs: one row per pair of runs; experts: one row per SE of any run, a[l,e] and SE flag per run."""

    names: list[str]
    pairs: pd.DataFrame
    experts: pd.DataFrame
    agree: bool
    details: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"runs": self.names, "agree": self.agree, "pairs": self.pairs.to_dict(orient="records"),
                "experts": self.experts.to_dict(orient="records")}  # fmt: skip


def jaccard(a: set, b: set) -> float:
    """|A & B| / |A | B|; two empty sets agree (1.0)."""
    return len(a & b) / len(a | b) if a | b else 1.0


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho: Pearson correlation of the average ranks (ties share their mean rank).
    NaN when fewer than 2 points or a side is constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2:
        return float("nan")
    rx, ry = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    dx, dy = rx - rx.mean(), ry - ry.mean()
    denominator = np.sqrt((dx * dx).sum() * (dy * dy).sum())
    return float((dx * dy).sum() / denominator) if denominator > 0 else float("nan")


def expert_values(table: pd.DataFrame) -> dict[Expert, float]:
    """{(layer, expert | 'shared'): a[l,e]}; dense MLPs are not experts."""
    moe = table[table["kind"] != "dense"]
    return {(int(r.layer), expert_label(r.kind, r.expert)): float(r.max_abs_output) for r in moe.itertuples()}


def common_values(a: RunSEs, b: RunSEs) -> tuple[list[Expert], np.ndarray, np.ndarray]:
    """The keys both runs measured, in a's order, and their a[l,e] in each run."""
    va, vb = expert_values(a.table), expert_values(b.table)
    keys = [k for k in va if k in vb]
    return keys, np.array([va[k] for k in keys]), np.array([vb[k] for k in keys])


def _ordered(experts: set[Expert]) -> list[Expert]:
    return sorted(experts, key=lambda x: (x[0], isinstance(x[1], str), x[1] if isinstance(x[1], int) else 0))


def _pair_row(a: RunSEs, b: RunSEs) -> dict[str, Any]:
    keys, xa, xb = common_values(a, b)
    sa, sb = set(a.experts), set(b.experts)
    return {"run_a": a.name, "run_b": b.name, "jaccard": jaccard(sa, sb), "spearman": spearman(xa, xb),
            "common_experts": len(keys), "se_a": len(sa), "se_b": len(sb),
            "only_a": format_experts(_ordered(sa - sb)),
            "only_b": format_experts(_ordered(sb - sa))}  # fmt: skip


def _expert_rows(runs: Sequence[RunSEs]) -> pd.DataFrame:
    union: list[Expert] = []
    for run in runs:
        union += [x for x in run.experts if x not in union]
    values = [expert_values(run.table) for run in runs]
    rows = []
    for key in union:
        row: dict[str, Any] = {"layer": key[0], "expert": key[1]}
        for run, v in zip(runs, values):
            row[f"a[{run.name}]"] = v.get(key, float("nan"))
            row[f"se[{run.name}]"] = key in run.experts
        rows.append(row)
    return pd.DataFrame(rows)


def compare(runs: Sequence[RunSEs]) -> Comparison:
    """Compare two or more runs; `agree` when every run found the same SE set."""
    if len(runs) < 2:
        raise UserError(f"compare needs at least two runs, got {len(runs)}.")
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise UserError(f"run names must differ, got {names}.")
    pairs = pd.DataFrame([_pair_row(a, b) for a, b in combinations(runs, 2)])
    agree = all(set(r.experts) == set(runs[0].experts) for r in runs)
    return Comparison(names, pairs, _expert_rows(runs), agree,
                      {"super_experts": {r.name: experts_json(r.experts) for r in runs}})  # fmt: skip


def comparison_text(result: Comparison) -> str:
    """Console table: one line per pair, then the SEs with a[l,e] per run (* = SE in that run)."""
    lines = [f"{'run A':<16} {'run B':<16} {'jaccard':>7} {'spearman':>8} {'common':>7}  only A / only B"]
    for r in result.pairs.itertuples():
        lines.append(f"{r.run_a[:16]:<16} {r.run_b[:16]:<16} {r.jaccard:>7.3f} {r.spearman:>8.3f} "
                     f"{r.common_experts:>7}  {r.only_a or '-'} / {r.only_b or '-'}")  # fmt: skip
    lines.append("")
    lines.append(f"{'SE':<10}" + "".join(f" {n[:14]:>15}" for n in result.names))
    for row in result.experts.to_dict(orient="records"):
        cells = "".join(f" {row[f'a[{n}]']:>14.4g}{'*' if row[f'se[{n}]'] else ' '}" for n in result.names)
        lines.append(f"{row['layer']}:{row['expert']!s:<8}"[:10].ljust(10) + cells)
    agreement = "agree: the same SEs in every run" if result.agree else "differ: the runs found different SEs"
    lines.append(agreement)
    return "\n".join(lines)
