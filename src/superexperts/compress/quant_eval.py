"""The `quant-eval` study: what keeping the Super Experts in full precision buys (issue 11).

Conditions, each a set of experts fake-quantized in memory (`quant.fake_quantized`, RTN):
`original` (nothing), `all` (every routed and shared expert), `protect-super` (all but the SEs),
`protect-random-<seed>` (all but as many random non-SE routed experts: the control for "any
protected expert helps") and `se-only` (only the SEs). Each is measured on the same perplexity
tokens, lm-eval tasks and prompts as prune-eval (`prune_eval.evaluate_model`), and on the same
calibration windows for the SEs' outputs and the massive activation per layer (`profile`); the
attention sinks (D_sink against the original) on the first windows (`sinks.measure_sinks`).

Below the expert (issue 20): `protect-super-atoms` quantizes everything but the SEs' super atoms
(their rows and columns kept); `camera-q_conditions` gives each routed atom a width by its CAMERA
score tier (`quant.tiers`), without and with the super atoms kept. Every condition reports its
`average_bits` per expert weight (kept weights count at the model's dtype width).

>>> conds = quant_conditions(map_model(model), [(1, 68), (2, 92)], n_random=3)
>>> results = run_quant_conditions(model, tok, conds, plan, Scheme(bits=4), calib_ids, reference, ses)
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..capture.profile import Profile, profile
from ..evaluate.ablate import random_controls
from ..evaluate.ablate.conditions import EvalPlan, evaluate_model, summarize
from ..evaluate.sinks import measure_sinks
from ..models.adapters import ModelMap, map_model
from ..models.atoms import atoms_per_expert
from ..models.experts import Expert, experts_json, validate_experts
from . import damage
from .quant import Scheme, all_experts, fake_quantized
from .quant.tiers import atom_bits_of, average_bits

FORMAT = "superexperts.compress.quant_eval/1"
RANDOM_GROUP = "protect-random"
SINK_WINDOWS = 4  # calibration windows for the sink metrics (each condition re-applied per window)


@dataclass(frozen=True)
class QuantCondition:
    """Experts quantized: all but `protected`, or exactly `only` when it is given."""

    name: str
    protected: list[Expert]
    only: list[Expert] | None = None
    atom_bits: dict[Expert, Any] = field(default_factory=dict)  # width per atom (0: kept), `fake_quantized`

    def quantized(self, everything: list[Expert]) -> list[Expert]:
        if self.only is not None:
            return list(self.only)
        keep = set(self.protected)
        return [x for x in everything if x not in keep]

    def applied(self, model: torch.nn.Module, everything: list[Expert], scheme: Scheme):
        """The condition's fake quantization of `model`, as a context manager."""
        return fake_quantized(model, self.quantized(everything), scheme, self.atom_bits)


def quant_conditions(model_map: ModelMap, super_experts: list[Expert], *, n_random: int = 0,
                     seed: int = 0, super_atoms: dict[Expert, list[int]] | None = None,
                     bits: int | None = None) -> list[QuantCondition]:  # fmt: skip
    """original, all, protect-super, [protect-super-atoms at `bits`,] protect-random-<seed>..., se-only
    (validated against the model)."""
    ses = validate_experts(model_map, super_experts)
    controls = random_controls(model_map, ses, n_random, seed=seed)
    kept = []
    if super_atoms:
        widths = atom_bits_of(None, atoms_per_expert(model_map, shared=True), keep=super_atoms, default=bits)
        kept = [QuantCondition("protect-super-atoms", [], atom_bits=widths)]
    return [QuantCondition("original", [], []), QuantCondition("all", []), QuantCondition("protect-super", ses),
            *kept, *[QuantCondition(f"{RANDOM_GROUP}-{seed + i}", c) for i, c in enumerate(controls)],
            QuantCondition("se-only", [], ses)]  # fmt: skip


def camera_q_conditions(model_map: ModelMap, widths, super_atoms: dict[Expert, list[int]] | None = None
                        ) -> list[QuantCondition]:  # fmt: skip
    """original, camera-q (every routed atom at its tier's width; shared experts are not ranked and stay
    unquantized), and camera-q-protect-super-atoms (the same, super atoms kept) when there are any."""
    sizes = atoms_per_expert(model_map, shared=True)
    routed = [x for x in all_experts(model_map) if x[1] != "shared"]
    out = [QuantCondition("original", [], []),
           QuantCondition("camera-q", [], routed, atom_bits_of(widths, sizes, keep={}))]  # fmt: skip
    if super_atoms:
        out.append(QuantCondition("camera-q-protect-super-atoms", [], routed,
                                  atom_bits_of(widths, sizes, keep=super_atoms)))  # fmt: skip
    return out


def _condition_json(cond: QuantCondition, quantized: list[Expert], model: torch.nn.Module, scheme: Scheme
                    ) -> dict[str, Any]:  # fmt: skip
    model_map = map_model(model)
    kept_bits = next(model_map.moe[0].experts.parameters()).element_size() * 8  # the model's dtype width
    bits = average_bits(atoms_per_expert(model_map, shared=True), quantized, scheme.bits, cond.atom_bits, kept_bits)
    listed = cond.only is not None and not cond.atom_bits  # camera-q's `only` is every routed expert: not listed
    out = {"name": cond.name, "protected": experts_json(cond.protected),
           "quantized_only": experts_json(cond.only) if listed else None,
           "quantized_experts": len(quantized), "average_bits": round(bits, 4)}  # fmt: skip
    if cond.atom_bits:
        out["atoms_kept"] = int(sum(int((w == 0).sum()) for w in cond.atom_bits.values()))
    return out


def _measures(prof: Profile, reference: Profile, ses: list[Expert]) -> dict[str, Any]:
    before, after = damage.massive(reference.layer_stats), damage.massive(prof.layer_stats)
    return {"massive": after, "massive_retention": damage.retention(before, after),
            "super_experts": damage.se_outputs(reference.expert_stats, prof.expert_stats, ses)}


def run_quant_conditions(model: torch.nn.Module, tokenizer, conditions: list[QuantCondition], plan: EvalPlan,
                         scheme: Scheme, calib_ids: torch.Tensor, reference: Profile, ses: list[Expert], *,
                         batch_size: int = 1, progress: bool = False) -> list[dict[str, Any]]:  # fmt: skip
    """Evaluate every condition; `reference` is the original model's profile on `calib_ids`."""
    everything = all_experts(map_model(model))
    results = []
    for cond in tqdm(conditions, desc="conditions", unit="condition", disable=not progress):
        start = time.perf_counter()
        chosen = cond.quantized(everything)
        with cond.applied(model, everything, scheme):
            measured = evaluate_model(model, tokenizer, plan)
            prof = profile(model, calib_ids, batch_size=batch_size) if chosen else reference
        results.append(_condition_json(cond, chosen, model, scheme) | measured | _measures(prof, reference, ses)
                       | {"seconds": round(time.perf_counter() - start, 3)})  # fmt: skip
    return results


def add_sinks(model: torch.nn.Module, results: list[dict[str, Any]], conditions: list[QuantCondition],
              scheme: Scheme, calib_ids: torch.Tensor) -> int:  # fmt: skip
    """Sink mass, sink rate and D_sink (vs the original) of every condition, on the first windows;
    returns how many windows were used."""
    everything = all_experts(map_model(model))
    factories = {c.name: functools.partial(c.applied, model, everything, scheme)
                 for c in conditions if c.name != "original"}  # fmt: skip
    ids = calib_ids[:SINK_WINDOWS]
    measured = {c.name: c for c in measure_sinks(model, ids, factories).conditions}
    for r in results:
        c = measured[r["name"]]
        r |= {"sink_mass": c.sink_mass, "sink_rate": c.sink_rate(), "d_sink": c.d_sink}
    return int(ids.shape[0])


def _band(rows: list[list[float]]) -> dict[str, list[float]]:
    arr = np.array(rows, dtype=np.float64)  # (seeds, layers)
    return {"mean": arr.mean(0).tolist(), "min": arr.min(0).tolist(), "max": arr.max(0).tolist()}


def quant_summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The random-protection group: perplexity/task/generation spreads (as prune-eval's controls) and
    the per-layer band (mean, min, max) of the massive retention."""
    summary = summarize(results, groups=(RANDOM_GROUP,))
    members = [r for r in results if r["name"].startswith(RANDOM_GROUP + "-")]
    if members:
        summary[RANDOM_GROUP]["massive_retention"] = _band([r["massive_retention"] for r in members])
    return summary


def quant_eval_json(results: list[dict[str, Any]], scheme: Scheme, metadata: dict[str, Any]) -> dict[str, Any]:
    return {"format": FORMAT, "scheme": scheme.describe(), "conditions": results, "summary": quant_summary(results),
            **metadata}


def _fmt(value: Any, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def format_quant_table(document: dict[str, Any]) -> str:
    """One console line per condition: experts quantized, perplexity, worst MA retention, SE error, D_sink."""
    header = ["condition", "quantized", "avg bits", "perplexity", "worst MA retention", "worst SE change",
              "mean D_sink"]  # fmt: skip
    rows = [header]
    for r in document["conditions"]:
        first = min((s["layer"] for s in r["super_experts"]), default=0)
        change = max((s["relative_change"] for s in r["super_experts"]), key=abs, default=None)
        d_sink = [v for v in r.get("d_sink") or [] if isinstance(v, float) and math.isfinite(v)]
        rows.append([r["name"], str(r["quantized_experts"]), _fmt(r.get("average_bits"), 3), _fmt(r["perplexity"], 6),
                     _fmt(damage.worst_retention(r["massive_retention"], first), 3),
                     "-" if change is None else f"{change:+.1%}",
                     _fmt(float(np.mean(d_sink)) if d_sink else None, 3)])  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)
