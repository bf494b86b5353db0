"""Super Expert criteria: pure functions over a profile's expert table.

Each criterion takes the expert table (columns layer, expert, kind, max_abs_output, ...) and
the model's layer count, and returns a `Verdict`. No model, no I/O.

    >>> verdict = identify(table, num_layers=48, criterion="paper", percentile=99.5)
    >>> verdict.experts
    [(1, 68), (2, 92), (3, 82)]

Criteria (all keyword parameters validated, `include_layers` a fraction or a list of layers):
    paper          a > P_percentile(A) and a > max(A) // 10, A = experts of the judged layers
    reap           CerebrasResearch/reap `get_super_expert_indices`: signed max of routed experts,
                   P and max over all MoE layers, then the first 75% of MoE layers
    reap-abs       as paper (|output|, shared experts included), but P and max over ALL layers'
                   experts, then the layer filter (this tool's `reap` before REAP was read exactly)
    std            a > mean(A) + k * std(A)
    mean-multiple  a > m * mean(A)
    quantile       a > Q_q(A) (no max/10 condition)
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..models.experts import Expert
from ..runs.errors import UserError, did_you_mean

if TYPE_CHECKING:  # pandas is imported where a table is read: names and parameters are checked without it
    import pandas as pd

    from ..capture.profile import Profile

REQUIRED_COLUMNS = ("layer", "expert", "kind", "max_abs_output")


@dataclass(frozen=True)
class Verdict:
    """The SEs a criterion found, with the thresholds it used (for the report and JSON)."""

    criterion: dict[str, Any]  # name, parameters and computed thresholds
    super_experts: pd.DataFrame  # rows of the expert table, sorted by max_abs_output desc
    candidates: pd.DataFrame = field(repr=False, default_factory=lambda: _empty_table())  # the pool judged

    @property
    def experts(self) -> list[tuple[int, int | str]]:
        """[(layer, expert)] with expert 'shared' for shared experts."""
        return [(int(r.layer), expert_label(r.kind, r.expert)) for r in self.super_experts.itertuples()]


def _empty_table() -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame()


def expert_label(kind: str, expert: int) -> int | str:
    """JSON form of an expert: its index, or 'shared' / 'dense'."""
    return int(expert) if kind == "routed" else kind


def layer_filter(num_layers: int, include_layers: float | list[int], *, floor: bool = False) -> list[int]:
    """Layers judged: a fraction f keeps layers < round(f * L) (the reference's 0.75; REAP uses
    floor, `int(f * L)`), a list is explicit."""
    if isinstance(include_layers, (list, tuple)):
        bad = [i for i in include_layers if not 0 <= int(i) < num_layers]
        if bad or not include_layers:
            raise UserError(f"--include-layers {bad or '[]'} out of range; "
                            f"the model has layers 0..{num_layers - 1}.")
        return sorted({int(i) for i in include_layers})
    if isinstance(include_layers, bool) or not isinstance(include_layers, (int, float)):
        raise UserError(f"--include-layers must be a fraction like 0.75 or a list like 1,2,3; "
                        f"got {include_layers!r}.")
    if not 0 < include_layers <= 1:
        raise UserError(f"--include-layers fraction {include_layers} must be in (0, 1], e.g. 0.75.")
    cut = int(include_layers * num_layers) if floor else round(include_layers * num_layers)
    # Python's round, as the reference (`round(0.75 * num_layers)`).
    return list(range(cut))


def candidate_pool(table: pd.DataFrame, layers: list[int]) -> pd.DataFrame:
    """Routed and shared experts of the judged layers; dense MLPs are never SEs."""
    return table[(table["kind"] != "dense") & table["layer"].isin(layers)]


def check_table(table: pd.DataFrame) -> None:
    """The expert table must have the columns the rules read, with usable values."""
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise UserError(f"expert table lacks columns {missing}; re-run `superexperts profile`.")
    if table.empty or table[list(REQUIRED_COLUMNS)].isna().any().any():
        raise UserError("expert table is empty or has missing values; re-run `superexperts profile`.")
    import pandas as pd

    if pd.to_numeric(table["max_abs_output"], errors="coerce").isna().any():
        raise UserError("expert table has non-numeric max_abs_output values; re-run `superexperts profile`.")


# The range of each criterion parameter: (low, high, high inclusive), both ends open unless said.
RANGES = {"percentile": (0, 100, False), "max_fraction": (0, 1, True), "q": (0, 1, False)}


def check_value(name: str, value: Any) -> None:
    """One criterion parameter against its range (the rules and `check_criterion` both call this)."""
    if name in RANGES:
        low, high, high_inclusive = RANGES[name]
        if not (low < value <= high if high_inclusive else low < value < high):
            bracket = "]" if high_inclusive else ")"
            raise UserError(f"{name}={value} is out of range; it must be in ({low}, {high}{bracket}.")
    elif name == "k" and not (math.isfinite(value) and value >= 0):
        raise UserError(f"k={value} is out of range; it must be a finite number >= 0, e.g. 3.")
    elif name == "m" and not (math.isfinite(value) and value > 0):
        raise UserError(f"m={value} is out of range; it must be a finite number > 0, e.g. 10.")


def _pool(table: pd.DataFrame, num_layers: int, include_layers: float | list[int], *, floor: bool = False
          ) -> tuple[list[int], pd.DataFrame, np.ndarray]:
    """(judged layers, their candidate rows, their a[l,e] as float64)."""
    check_table(table)
    layers = layer_filter(num_layers, include_layers, floor=floor)
    pool = candidate_pool(table, layers)
    if pool.empty:
        raise _no_experts(layers)
    return layers, pool, pool["max_abs_output"].to_numpy(dtype=np.float64)


def _no_experts(layers: list[int]) -> UserError:
    return UserError(f"no experts in layers {layers}; widen --include-layers.")


def _select(pool: pd.DataFrame, mask: np.ndarray) -> pd.DataFrame:
    return pool[mask].sort_values("max_abs_output", ascending=False, kind="stable").reset_index(drop=True)


def _thresholds(values: np.ndarray, percentile: float, max_fraction: float, *, floor_division: bool
                ) -> dict[str, float]:
    """The two thresholds of paper Eq. 6 (and REAP's copy of it) over the values A they are taken from:
    P_percentile(A) (numpy's linear percentile) and a fraction of max(A). The reference writes
    `max // 10`; for another fraction f that is `max // (1/f)` (`floor_division`), else max * f."""
    check_value("percentile", percentile)
    check_value("max_fraction", max_fraction)
    top = float(values.max())
    return {
        "percentile_value": float(np.percentile(values, percentile)),
        "max_value": top,
        "max_fraction_value": top // (1.0 / max_fraction) if floor_division else top * max_fraction,
    }


def _above(values: np.ndarray, thresholds: dict[str, float]) -> np.ndarray:
    return (values > thresholds["percentile_value"]) & (values > thresholds["max_fraction_value"])


def paper(
    table: pd.DataFrame,
    num_layers: int,
    *,
    percentile: float = 99.5,
    max_fraction: float = 0.1,
    include_layers: float | list[int] = 0.75,
    floor_division: bool = True,
) -> Verdict:
    """Paper Eq. 6 with the reference's semantics: a > P_percentile(A) and a > max(A)/10, over the
    experts of layers < round(0.75 L); numpy's linear percentile; `max // 10` (floor) by default."""
    layers, pool, values = _pool(table, num_layers, include_layers)
    limits = _thresholds(values, percentile, max_fraction, floor_division=floor_division)
    criterion = {"name": "paper", "percentile": percentile, "max_fraction": max_fraction,
                 "include_layers": include_layers, "floor_division": floor_division, "layers_judged": layers,
                 **limits}  # fmt: skip
    return Verdict(criterion, _select(pool, _above(values, limits)), pool)


def _all_layer_rule(judge: Callable[[pd.DataFrame, int, float, float, float | list[int]], Verdict]) -> Criterion:
    """REAP's shape, shared by `reap` and `reap-abs`: one signature (its keyword defaults are the
    criterion's parameters, `criterion_defaults`) and one range check. Each takes P_percentile and a
    fraction of the max over the experts of EVERY layer, then keeps the judged layers' experts;
    `judge(table, num_layers, percentile, max_fraction, include_layers)` says which values and how."""

    def rule(table: pd.DataFrame, num_layers: int, *, percentile: float = 99.5, max_fraction: float = 0.1,
             include_layers: float | list[int] = 0.75) -> Verdict:  # fmt: skip
        check_value("percentile", percentile)
        check_value("max_fraction", max_fraction)
        return judge(table, num_layers, percentile, max_fraction, include_layers)

    rule.__name__, rule.__qualname__, rule.__doc__ = judge.__name__, judge.__qualname__, judge.__doc__
    return rule


@_all_layer_rule
def reap_abs(table: pd.DataFrame, num_layers: int, percentile: float, max_fraction: float,
             include_layers: float | list[int]) -> Verdict:  # fmt: skip
    """REAP's pooling on the paper's a[l,e]: the percentile (linear) and max(A)/10 (true division)
    over the experts of ALL layers (|output|, shared experts included), then layers < int(0.75 L).
    Not REAP's own rule, which ranks the signed max of routed experts: see `reap`."""
    layers, pool, values = _pool(table, num_layers, include_layers, floor=True)
    everything = table.loc[table["kind"] != "dense", "max_abs_output"].to_numpy(dtype=np.float64)
    limits = _thresholds(everything, percentile, max_fraction, floor_division=False)
    criterion = {"name": "reap-abs", "percentile": percentile, "max_fraction": max_fraction,
                 "include_layers": include_layers, "layers_judged": layers,
                 "percentile_pool": len(everything),  # experts the percentile is taken over (all layers)
                 **limits}  # fmt: skip
    return Verdict(criterion, _select(pool, _above(values, limits)), pool)


def _reap_values(table: pd.DataFrame) -> pd.DataFrame:
    """Routed experts with REAP's ranking value: the largest signed output, floored at 0 (REAP
    starts its running max at zeros, so an expert whose outputs are all negative, or that was
    never routed, scores 0)."""
    import pandas as pd

    check_table(table)
    routed = table[table["kind"] == "routed"]
    signed = pd.to_numeric(routed.get("max_signed_output"), errors="coerce") if "max_signed_output" in routed \
        else pd.Series(np.nan, index=routed.index)  # fmt: skip
    if routed.empty or signed.isna().any():
        raise UserError("the expert table has no max_signed_output (largest signed output) for its routed "
                        "experts; re-run `superexperts profile` (runs before this column cannot use 'reap', "
                        "'reap-abs' is the |output| variant).")  # fmt: skip
    return routed.assign(reap_value=signed.clip(lower=0.0).astype(np.float32))


@_all_layer_rule
def reap(table: pd.DataFrame, num_layers: int, percentile: float, max_fraction: float,
         include_layers: float | list[int]) -> Verdict:  # fmt: skip
    """CerebrasResearch/reap `get_super_expert_indices`, exactly: over every MoE layer's ROUTED
    experts, v = max(0, largest signed down_proj output); threshold = max(torch.quantile(v, p/100),
    max(v) / 10) in float32; SE iff v > threshold and the expert's MoE layer is among the first
    int(0.75 * number of MoE layers) (REAP counts MoE layers, not decoder layers). A list for
    `include_layers` names decoder layers instead. (REAP's prune.py then matches those MoE-layer
    rows against decoder-layer numbers, which differ when dense layers come first: DeepSeek, GLM4.)"""
    import torch

    routed = _reap_values(table)
    moe_layers = sorted(int(x) for x in routed["layer"].unique())
    if isinstance(include_layers, (list, tuple)):
        layers = layer_filter(num_layers, include_layers)
    else:
        layer_filter(len(moe_layers), include_layers)  # validates the fraction
        layers = moe_layers[: int(include_layers * len(moe_layers))]
    values = torch.tensor(routed["reap_value"].to_numpy(), dtype=torch.float32)
    p_value = torch.quantile(values, percentile / 100.0).item()
    top = values.max().item()
    max_value = top / (1.0 / max_fraction)  # REAP: `max / times`, times = 10 (1 / 0.1 is exactly 10.0)
    threshold = max(p_value, max_value)
    mask = (values > threshold).numpy() & routed["layer"].isin(layers).to_numpy()
    chosen = routed[mask].sort_values("reap_value", ascending=False, kind="stable")
    criterion = {
        "name": "reap", "value": "max(0, max_signed_output)", "percentile": percentile,
        "max_fraction": max_fraction, "include_layers": include_layers, "layers_judged": layers,
        "moe_layers": moe_layers, "percentile_pool": len(values), "percentile_value": p_value, "max_value": top,
        "max_fraction_value": max_value, "threshold": threshold,
    }  # fmt: skip
    return Verdict(criterion, chosen.drop(columns="reap_value").reset_index(drop=True),
                   routed[routed["layer"].isin(layers)].drop(columns="reap_value"))  # fmt: skip


def std(
    table: pd.DataFrame, num_layers: int, *, k: float = 3.0, include_layers: float | list[int] = 0.75
) -> Verdict:
    """a > mean(A) + k * std(A) (population std), A = experts of the judged layers."""
    check_value("k", k)
    layers, pool, values = _pool(table, num_layers, include_layers)
    mean, sigma = float(values.mean()), float(values.std())
    threshold = mean + k * sigma
    criterion = {"name": "std", "k": k, "include_layers": include_layers, "layers_judged": layers,
                 "mean": mean, "std": sigma, "threshold": threshold}  # fmt: skip
    return Verdict(criterion, _select(pool, values > threshold), pool)


def mean_multiple(
    table: pd.DataFrame, num_layers: int, *, m: float = 10.0, include_layers: float | list[int] = 0.75
) -> Verdict:
    """a > m * mean(A), A = experts of the judged layers."""
    check_value("m", m)
    layers, pool, values = _pool(table, num_layers, include_layers)
    mean = float(values.mean())
    criterion = {"name": "mean-multiple", "m": m, "include_layers": include_layers, "layers_judged": layers,
                 "mean": mean, "threshold": m * mean}  # fmt: skip
    return Verdict(criterion, _select(pool, values > m * mean), pool)


def quantile(
    table: pd.DataFrame, num_layers: int, *, q: float = 0.999, include_layers: float | list[int] = 0.75
) -> Verdict:
    """a > the q quantile of A (numpy linear), A = experts of the judged layers; no max/10 condition."""
    check_value("q", q)
    layers, pool, values = _pool(table, num_layers, include_layers)
    threshold = float(np.quantile(values, q))
    criterion = {"name": "quantile", "q": q, "include_layers": include_layers, "layers_judged": layers,
                 "threshold": threshold}  # fmt: skip
    return Verdict(criterion, _select(pool, values > threshold), pool)


Criterion = Callable[..., Verdict]
CRITERIA: dict[str, Criterion] = {
    "paper": paper,
    "reap": reap,
    "reap-abs": reap_abs,
    "std": std,
    "mean-multiple": mean_multiple,
    "quantile": quantile,
}


def get_criterion(name: str) -> Criterion:
    if name not in CRITERIA:
        choices = sorted(CRITERIA)
        raise UserError(f"Unknown criterion '{name}'. {did_you_mean(name, choices)}"
                        f"Available: {', '.join(choices)}.")
    return CRITERIA[name]


def identify(table: pd.DataFrame, num_layers: int, criterion: str = "paper", **params: Any) -> Verdict:
    """Apply a named criterion to an expert table."""
    check_params(criterion, params)
    return get_criterion(criterion)(table, num_layers, **params)


def check_criterion(name: str, params: dict[str, Any], num_layers: int | None) -> None:
    """Every parameter error of `name` with `params` before any profiling, without a table (no pandas):
    the names, each value's range (`check_value`, as the rule checks it) and the layers judged among
    `num_layers` (from config.json; None: only the parameters, with just enough layers for an
    --include-layers list)."""
    check_params(name, params)
    values = criterion_defaults(name) | params
    for key, value in values.items():
        check_value(key, value)
    if num_layers is None:
        listed = values["include_layers"]
        num_layers = max([4, *(int(i) + 1 for i in listed)]) if isinstance(listed, (list, tuple)) else 4
    layers = layer_filter(num_layers, values["include_layers"], floor=name == "reap-abs")
    if not layers and name != "reap":  # reap judges a share of the MoE layers and may judge none (see `reap`)
        raise _no_experts(layers)


def criterion_defaults(name: str) -> dict[str, Any]:
    """The keyword parameters of a criterion and their defaults: {'percentile': 99.5, ...}."""
    signature = inspect.signature(get_criterion(name))
    return {p.name: p.default for p in signature.parameters.values() if p.kind is p.KEYWORD_ONLY}


def check_params(name: str, params: dict[str, Any]) -> None:
    """One-line error for a parameter the criterion does not take."""
    defaults = criterion_defaults(name)
    for key in params:
        if key not in defaults:
            hint = did_you_mean(key, list(defaults))
            raise UserError(f"criterion '{name}' has no parameter '{key}'. {hint}"
                            f"Parameters: {', '.join(defaults)}.")  # fmt: skip


def parse_include_layers(text: str) -> float | list[int]:
    """'0.75' -> 0.75 (fraction of layers), '1,2,3' -> [1, 2, 3], '3,' -> [3]."""
    text = str(text).strip()
    try:
        if "," in text:
            return [int(part) for part in text.split(",") if part.strip()]
        return float(text)
    except ValueError:
        raise UserError(f"--include-layers {text!r}: write a fraction like 0.75 "
                        "or layers like 1,2,3 (one layer: 3,).")


def _convert(name: str, key: str, text: str, default: Any) -> Any:
    if key == "include_layers":
        return parse_include_layers(text)
    if isinstance(default, bool):
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise UserError(f"--param {key}={text!r} for criterion '{name}' must be true or false.")
    try:
        return type(default)(text)
    except ValueError:
        raise UserError(f"--param {key}={text!r} for criterion '{name}' must be a {type(default).__name__}.")


def parse_params(name: str, pairs: list[str] | None) -> dict[str, Any]:
    """['percentile=99', 'include_layers=1,2'] -> {'percentile': 99.0, 'include_layers': [1, 2]},
    typed by the criterion's defaults; unknown keys and bad values are one-line errors."""
    defaults = criterion_defaults(name)
    params: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UserError(f"--param {pair!r}: write key=value, e.g. percentile=99.5.")
        check_params(name, {key: None})
        params[key] = _convert(name, key, text.strip(), defaults[key])
    return params


def paper_super_experts(prof: Profile) -> list[Expert]:
    """The paper rule's SEs of a profile; a model without any cannot be studied."""
    experts = identify(prof.expert_stats, prof.num_layers, "paper").experts
    if not experts:
        raise UserError("profiling found no Super Experts with the paper's rule; `superexperts profile` with "
                        "another --criterion, then pass --from RUN_DIR.")  # fmt: skip
    return experts
