"""Atom pruning by a score table, with and without Super Expert protection (issue 20, items 3-4).

Pure functions over an atom score table (columns layer, expert, atom, score; routed atoms; higher =
more important). The lowest `int(n * fraction)` atoms of each ranking scope are pruned, ties broken
by (layer, expert, atom):

    camera   scope "layer"   CAMERA-P ranks the micro-experts of each MoE layer
    heapr    scope "global"  HEAPr ranks all routed atoms of the model together

Protection takes atoms out of the ranking and prunes the same number from the next lowest (as the
expert-level `pruning_criteria` does): `super` keeps every atom of the Super Experts, `super-atoms`
only their super atoms (super_experts.json `super_atoms`). For each super atom the plan also says
where it ranks (percentile of its scope's atoms scored strictly below it: 0 = the lowest) and
whether the unprotected criterion prunes it. Shared experts are not ranked: HEAPr excludes them,
and we keep CAMERA to the routed experts too, so both criteria prune the same population.

>>> plan = atom_pruning_plan(scores, 0.25, scope="global", protect="super-atoms", super_atoms={(1, 3): [(7, 0.97)]})
>>> plan.super_atoms[0]["percentile"], plan.super_atoms[0]["pruned_unprotected"]
(4.2, True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..models.atoms import Atom, atom_key, atoms_json
from ..models.experts import Expert
from ..runs.errors import UserError, check_choice
from .atoms import KEYS, camera_scores, check_rho

if TYPE_CHECKING:  # pandas where a table is computed: the request's checks import this module before it
    import pandas as pd

SCOPES = {"camera": "layer", "heapr": "global"}  # criterion -> ranking scope
PROTECT = ("none", "super", "super-atoms")
COLUMNS = ("layer", "expert", "atom", "score")


def check_atom_request(criterion: str, fraction: float, protect: str) -> None:
    """Flag values, checked before any model loads."""
    check_choice("--prune-by", criterion, list(SCOPES))
    if not 0 < fraction < 1:
        raise UserError(f"--fraction {fraction} must be in (0, 1), e.g. 0.25 prunes a quarter of the atoms.")
    check_choice("--protect", protect, PROTECT)


def routed_scores(scores: pd.DataFrame) -> pd.DataFrame:
    """The routed atoms of a score table, typed and sorted; a missing column or NaN score is a one-line error."""
    import pandas as pd

    missing = [c for c in COLUMNS if c not in scores]
    if missing:
        raise UserError(f"the atom score table lacks {', '.join(missing)} (columns {', '.join(scores.columns)}); "
                        "it needs layer, expert, atom, score.")  # fmt: skip
    routed = scores[scores["kind"] == "routed"] if "kind" in scores else scores
    routed = routed[pd.to_numeric(routed["expert"], errors="coerce").fillna(-1) >= 0]  # shared: "shared" or -1
    table = pd.DataFrame({"layer": routed["layer"].astype(int), "expert": routed["expert"].astype(int),
                          "atom": routed["atom"].astype(int),
                          "score": pd.to_numeric(routed["score"], errors="coerce").astype(float)})  # fmt: skip
    if table.empty:
        raise UserError("the atom score table has no routed atoms; re-run `superexperts profile`.")
    if table["score"].isna().any():
        bad = table.loc[table["score"].isna(), ["layer", "expert", "atom"]].iloc[0].astype(int)
        raise UserError(f"the atom score table has no score for atom {bad.layer}:{bad.expert}:{bad.atom} "
                        "(NaN); re-run `superexperts profile`.")  # fmt: skip
    return table.sort_values(["layer", "expert", "atom"], kind="stable").reset_index(drop=True)


def _group(table: pd.DataFrame, scope: str) -> pd.Series:
    import pandas as pd

    return table["layer"] if scope == "layer" else pd.Series(0, index=table.index)


def _lowest(table: pd.DataFrame, counts: pd.Series, scope: str) -> list[Atom]:
    """The `counts[group]` lowest-scored atoms of each scope group of `table`."""
    ranked = table.assign(group=_group(table, scope)).sort_values(["group", "score", "layer", "expert", "atom"],
                                                                  kind="stable")  # fmt: skip
    position = ranked.groupby("group").cumcount()
    chosen = ranked[position.to_numpy() < ranked["group"].map(counts).to_numpy()]
    return sorted(zip(chosen["layer"].tolist(), chosen["expert"].tolist(), chosen["atom"].tolist()), key=atom_key)


def _keep_mask(table: pd.DataFrame, protect: str, super_experts: list[Expert],
               super_atoms: dict[Expert, list[tuple[int, float]]]) -> np.ndarray:  # fmt: skip
    if protect == "super":
        keys = set(super_experts)
        return np.array([(la, e) in keys for la, e in zip(table["layer"], table["expert"])], dtype=bool)
    if protect == "super-atoms":
        keys = {(la, e, k) for (la, e), ks in super_atoms.items() for k, _ in ks}
        return np.array([a in keys for a in zip(table["layer"], table["expert"], table["atom"])], dtype=bool)
    return np.zeros(len(table), dtype=bool)


@dataclass(frozen=True)
class AtomPruningPlan:
    criterion: str
    fraction: float
    scope: str  # "layer" | "global"
    protect: str  # none | super | super-atoms
    counts: dict[str, int]  # scope group ("layer N" or "all") -> atoms pruned there
    total: int  # atoms ranked
    unprotected: list[Atom]  # the lowest by the score
    protected: list[Atom]  # the lowest among the atoms not kept (== unprotected for protect none)
    kept: int  # atoms kept out of the ranking by the protection
    super_atoms: list[dict[str, Any]] = field(default_factory=list)  # where each SE's super atoms rank

    @property
    def super_atoms_hit(self) -> list[Atom]:
        return [(s["layer"], s["expert"], s["atom"]) for s in self.super_atoms if s["pruned_unprotected"]]

    def conditions(self) -> list[tuple[str, list[Atom]]]:
        """(condition name, atoms to zero): unprotected, then protected when protection is asked."""
        base = f"{self.criterion}-{self.fraction:g}"
        out = [(base, self.unprotected)]
        if self.protect != "none":
            out.append((f"{base}-protect-{self.protect}", self.protected))
        return out

    def to_json(self) -> dict[str, Any]:
        return {"criterion": self.criterion, "fraction": self.fraction, "scope": self.scope, "protect": self.protect,
                "atoms_ranked": self.total, "pruned_per_scope": self.counts, "atoms_pruned": len(self.unprotected),
                "atoms_kept_by_protection": self.kept, "super_atoms": self.super_atoms,
                "super_atoms_pruned_unprotected": atoms_json(self.super_atoms_hit)}  # fmt: skip


def _super_atom_ranks(table: pd.DataFrame, scope: str, super_atoms: dict[Expert, list[tuple[int, float]]],
                      unprotected: set[Atom], protected: set[Atom]) -> list[dict[str, Any]]:  # fmt: skip
    """Per super atom: its score, percentile in its scope (share scored strictly below), pruned or not."""
    group = _group(table, scope)
    indexed = table.set_index(["layer", "expert", "atom"])["score"]
    rows = []
    for (layer, expert), atoms in sorted(super_atoms.items(), key=lambda kv: atom_key((*kv[0], 0))):
        for k, share in atoms:
            row = {"layer": layer, "expert": expert, "atom": k, "share": share, "score": None, "percentile": None,
                   "pruned_unprotected": False, "pruned_protected": False}  # fmt: skip
            if expert != "shared" and (layer, expert, k) in indexed.index:
                score = float(indexed[(layer, expert, k)])
                peers = table["score"][group == (layer if scope == "layer" else 0)]
                row |= {"score": score, "percentile": round(100.0 * float((peers < score).mean()), 3),
                        "pruned_unprotected": (layer, expert, k) in unprotected,
                        "pruned_protected": (layer, expert, k) in protected}  # fmt: skip
            else:
                row["note"] = "not ranked (shared experts are not pruned)" if expert == "shared" else "not in the scores"
            rows.append(row)
    return rows


def atom_pruning_plan(scores: pd.DataFrame, fraction: float, *, criterion: str = "camera", scope: str | None = None,
                      protect: str = "none", super_experts: list[Expert] | None = None,
                      super_atoms: dict[Expert, list[tuple[int, float]]] | None = None) -> AtomPruningPlan:  # fmt: skip
    """The atoms to zero at `fraction`, unprotected and with `protect`, and where the super atoms rank.

    `scope` defaults to the criterion's (camera: per layer, heapr: global); `super_atoms` is
    {SE: [(atom, share), ...]} (`models.atoms.super_atoms_of`).
    """
    check_atom_request(criterion, fraction, protect)
    scope = scope or SCOPES[criterion]
    if scope not in ("layer", "global"):
        raise UserError(f"ranking scope {scope!r} is unknown; use layer or global.")
    super_experts, super_atoms = list(super_experts or []), dict(super_atoms or {})
    if protect == "super" and not super_experts:
        raise UserError("--protect super needs Super Experts: pass --from RUN_DIR with a super_experts.json.")
    if protect == "super-atoms" and not super_atoms:
        raise UserError("--protect super-atoms needs the super atoms of super_experts.json; re-run `superexperts "
                        "profile` without --no-atoms (older runs lack them) or use --protect super.")  # fmt: skip
    table = routed_scores(scores)
    sizes = _group(table, scope).value_counts()
    counts = (sizes * fraction).astype(int)  # CAMERA: int(n * ratio) per layer; HEAPr: of all atoms
    if int(counts.sum()) == 0:
        raise UserError(f"--fraction {fraction} prunes no atom (int(atoms x fraction) = 0); raise it.")
    unprotected = _lowest(table, counts, scope)
    keep = _keep_mask(table, protect, super_experts, super_atoms)
    available = _group(table[~keep], scope).value_counts().reindex(counts.index, fill_value=0)
    short = counts[counts > available]
    if len(short):
        raise UserError(f"cannot prune {int(short.iloc[0])} atoms {_where(short.index[0], scope)} while "
                        f"protecting {int(keep.sum())}; lower --fraction.")  # fmt: skip
    protected = _lowest(table[~keep], counts, scope) if keep.any() else unprotected
    ranks = _super_atom_ranks(table, scope, super_atoms, set(unprotected), set(protected))
    named = {_where(g, scope): int(c) for g, c in counts.sort_index().items()}
    return AtomPruningPlan(criterion, fraction, scope, protect, named, len(table), unprotected, protected,
                           int(keep.sum()), ranks)  # fmt: skip


def _where(group: Any, scope: str) -> str:
    return f"layer {int(group)}" if scope == "layer" else "all"


def format_atom_plan(plan: dict[str, Any]) -> str:
    """Console lines of `AtomPruningPlan.to_json()`: the count pruned, where each super atom ranks."""
    head = (f"{plan['criterion']} at {plan['fraction']:g} ({plan['scope']} ranking): {plan['atoms_pruned']} of "
            f"{plan['atoms_ranked']} routed atoms pruned; protect {plan['protect']}")  # fmt: skip
    lines = [head]
    for s in plan["super_atoms"]:
        name = f"{s['layer']}:{s['expert']}:{s['atom']}"
        if s["percentile"] is None:
            lines.append(f"  super atom {name}: {s.get('note', 'not ranked')}")
            continue
        verdict = "PRUNED unprotected" if s["pruned_unprotected"] else "kept unprotected"
        lines.append(f"  super atom {name} (share {s['share']:.2f}): percentile {s['percentile']:.1f}, {verdict}")
    return "\n".join(lines)


def atom_scores(prof: Any, criterion: str, *, rho: float = 0.9, model: Any = None, input_ids: Any = None,
                batch_size: int = 1) -> pd.DataFrame:  # fmt: skip
    """The one place prune-eval and quant-eval take atom scores from: (layer, expert, kind, atom, score).

    camera: CAMERA's score of the profile's atom statistics, (1 - rho) * camera_sum + rho * camera_max
    (`identify.atoms.camera_scores`). heapr: `capture.heapr.heapr` on `input_ids` (the calibration
    windows: one forward and one backward with the model's own loss); routed atoms only, as HEAPr.
    """
    check_rho(rho)
    if criterion == "heapr":
        if model is None or input_ids is None:
            raise UserError("--prune-by heapr needs the model and calibration windows; pass --from RUN with "
                            "--data (or the demo's built-in text).")  # fmt: skip
        from ..capture.heapr import heapr  # torch and the model's forward: only when heapr is asked for

        table = heapr(model, input_ids, batch_size=batch_size if isinstance(batch_size, int) else 1)
        return table.assign(kind="routed").rename(columns={"heapr": "score"})[[*KEYS, "score"]]
    stats = getattr(prof, "atom_stats", None)
    if stats is None or len(stats) == 0:
        raise UserError("the profile has no atom statistics (atom_stats.parquet); re-run `superexperts profile` "
                        "with this version and without --no-atoms to record them.")  # fmt: skip
    return camera_scores(stats, rho).rename(columns={"camera": "score"})[[*KEYS, "score"]]
