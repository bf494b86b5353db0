"""Expert pruning by a one-pass criterion, with and without Super Expert protection (issue 11).

Pure functions over a profile's expert table: in each MoE layer, the `int(E * fraction)` routed
experts with the lowest criterion value are pruned (REAP's count, `int(num_experts * ratio)`),
ties broken by the lower expert index. Protection takes the protected experts out of the
ranking, so the same number of experts is pruned from the next lowest - what REAP's
`--perserve_super_experts` does by setting their saliency to inf.

Criteria (columns the profiling pass records, `profile.EXPERT_COLUMNS`):
    frequency  tokens_routed   tokens routed to the expert
    reap       reap_saliency   mean over routed tokens of routing weight x ||expert output||_2
    ean        ean             sum over routed tokens of ||expert output||_2

>>> plan = pruning_plan(table, "reap", 0.25, protect=[(1, 68), (2, 92), (3, 82)])
>>> plan.super_experts_hit          # the SEs REAP would have pruned unprotected
[(2, 92)]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..models.experts import Expert, experts_json
from ..runs.errors import UserError, check_choice
from .atom_pruning import SCOPES as ATOM_CRITERIA
from .atom_pruning import check_atom_request

if TYPE_CHECKING:  # pandas where a table is computed: the request's checks import this module before it
    import pandas as pd

CRITERIA = {"frequency": "tokens_routed", "reap": "reap_saliency", "ean": "ean"}
PROTECT = ("super", "none")


@dataclass(frozen=True)
class PruningPlan:
    criterion: str
    fraction: float
    per_layer: dict[int, int]  # MoE layer -> experts pruned there
    protect: list[Expert]  # experts kept out of the ranking in the protected set
    unprotected: list[Expert]  # the lowest by the criterion
    protected: list[Expert]  # the lowest by the criterion among the unprotected experts

    @property
    def super_experts_hit(self) -> list[Expert]:
        """Protected experts (the SEs) that the unprotected criterion prunes."""
        hit = set(self.unprotected)
        return [e for e in self.protect if e in hit]

    def conditions(self, protect_name: str = "super") -> list[tuple[str, list[Expert]]]:
        """(condition name, experts to prune): unprotected, then protected when there is a list."""
        base = f"{self.criterion}-{self.fraction:g}"
        out = [(base, self.unprotected)]
        if self.protect:
            out.append((f"{base}-protect-{protect_name}", self.protected))
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "criterion": self.criterion, "column": CRITERIA[self.criterion], "fraction": self.fraction,
            "per_layer": {str(k): v for k, v in self.per_layer.items()},
            "protected_experts": experts_json(self.protect),
            "super_experts_pruned_unprotected": experts_json(self.super_experts_hit),
            "replacements": experts_json(sorted(set(self.protected) - set(self.unprotected))),
        }  # fmt: skip


def check_request(criterion: str, fraction: float, protect: str = "super") -> None:
    """Flag values, checked before any model loads."""
    check_choice("--prune-by", criterion, list(CRITERIA))
    if not 0 < fraction < 1:
        raise UserError(f"--fraction {fraction} must be in (0, 1), e.g. 0.25 prunes a quarter of each layer's experts.")
    if protect not in PROTECT:
        raise UserError(f"--protect {protect!r} is unknown; use {' or '.join(PROTECT)} (super-atoms: atom "
                        f"criteria {', '.join(ATOM_CRITERIA)} only).")  # fmt: skip


def check_prune_request(criterion: str | None, fraction: float | None, protect: str, *, n_random: int,
                        has_table: bool, has_run: bool = False, atoms: bool = False) -> None:  # fmt: skip
    """prune-eval's --prune-by/--fraction/--protect (expert or atom criteria, `atom_pruning`) and
    --atoms against its other flags, before the model loads."""
    if atoms and (criterion is not None or fraction is not None):
        raise UserError("--atoms and --prune-by each give the pruned set; pass one of them.")
    if criterion is None and fraction is None:
        return
    if criterion is None or fraction is None:
        raise UserError("--prune-by and --fraction go together, e.g. --prune-by reap --fraction 0.25.")
    if criterion in ATOM_CRITERIA:
        check_atom_request(criterion, fraction, protect)
    else:
        check_choice("--prune-by", criterion, [*CRITERIA, *ATOM_CRITERIA])
        check_request(criterion, fraction, protect)
    if n_random:
        raise UserError("--random draws SE-sized random sets; with --prune-by the conditions are the pruned "
                        "sets: drop --random.")  # fmt: skip
    if criterion in ATOM_CRITERIA and not has_run:
        raise UserError(f"--prune-by {criterion} ranks atoms by a profile run's atom statistics and super atoms: "
                        "pass --from RUN_DIR.")  # fmt: skip
    if not has_table:
        raise UserError("--prune-by ranks experts by a profile: pass --from RUN_DIR (or --experts super to "
                        "profile the model first).")  # fmt: skip


def criterion_values(table: pd.DataFrame, criterion: str) -> pd.DataFrame:
    """Routed experts (layer, expert, value) of the criterion; a missing or NaN column is a one-line error."""
    check_request(criterion, 0.5)
    column = CRITERIA[criterion]
    routed = table[table["kind"] == "routed"] if "kind" in table else table.iloc[0:0]
    if routed.empty:
        raise UserError("the expert table has no routed experts; pass a run folder of `superexperts profile`.")
    import pandas as pd

    values = pd.to_numeric(routed[column], errors="coerce") if column in routed else None
    if values is None or values.isna().any():
        raise UserError(f"the expert table has no usable {column} (criterion {criterion}): re-run `superexperts "
                        "profile` (older runs lack it; Llama4 folds its routing score into the expert input, so "
                        "it has no reap_saliency - use ean or frequency).")  # fmt: skip
    return pd.DataFrame({"layer": routed["layer"].astype(int), "expert": routed["expert"].astype(int),
                         "value": values.astype(float)})  # fmt: skip


def lowest(values: pd.DataFrame, fraction: float, keep: set[Expert] | frozenset = frozenset()
           ) -> tuple[list[Expert], dict[int, int]]:  # fmt: skip
    """The int(E * fraction) lowest experts of each layer, never one in `keep`; (experts, count per layer)."""
    pruned: list[Expert] = []
    per_layer: dict[int, int] = {}
    for layer, group in values.groupby("layer", sort=True):
        count = int(len(group) * fraction)
        ranked = group.sort_values(["value", "expert"], kind="stable")
        candidates = [(int(layer), int(e)) for e in ranked["expert"] if (int(layer), int(e)) not in keep]
        if count > len(candidates):
            raise UserError(f"layer {layer}: cannot prune {count} experts while protecting "
                            f"{len(group) - len(candidates)} of {len(group)}; lower --fraction.")  # fmt: skip
        pruned += candidates[:count]
        per_layer[int(layer)] = count
    if not pruned:
        raise UserError(f"--fraction {fraction} prunes no expert (int(experts per layer x fraction) = 0); raise it.")
    return sorted(pruned, key=lambda x: (x[0], x[1])), per_layer


def pruning_plan(table: pd.DataFrame, criterion: str, fraction: float, protect: list[Expert] | None = None
                 ) -> PruningPlan:  # fmt: skip
    """Both pruned sets of `criterion` at `fraction`: unprotected, and with `protect` kept."""
    check_request(criterion, fraction)
    values = criterion_values(table, criterion)
    protect = list(protect or [])
    unprotected, per_layer = lowest(values, fraction)
    protected = lowest(values, fraction, keep=set(protect))[0] if protect else unprotected
    return PruningPlan(criterion, fraction, per_layer, protect, unprotected, protected)


def format_plan(plan: dict[str, Any]) -> str:
    """The console line of `PruningPlan.to_json()`: which SEs the unprotected criterion prunes."""
    counts = sorted(set(plan["per_layer"].values()))
    head = f"{plan['criterion']} at {plan['fraction']:g}: {'/'.join(map(str, counts))} experts pruned per MoE layer"
    hit = plan["super_experts_pruned_unprotected"]
    if not plan["protected_experts"]:
        return head + " (no protection)"
    if not hit:
        return head + "; it prunes none of the protected experts"
    names = ", ".join(f"{e['layer']}:{e['expert']}" for e in hit)
    return head + f"; unprotected it prunes Super Experts {names} (protection prunes the next lowest instead)"
