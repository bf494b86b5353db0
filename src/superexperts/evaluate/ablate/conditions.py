"""Pruning conditions and their evaluation: the components of `prune-eval` (recipes/pruning.py).

Conditions: `original`; `super` (the run's SEs) or `custom` (a given list); `random-<seed>`
(as many random non-SE experts, any MoE layer) and `layer-controlled-<seed>` (random non-SEs
inside the SEs' layers, paper v3). Each condition is measured on the same perplexity tokens,
lm-eval tasks and generation prompts, with the experts ablated in memory (`ablate`), and the
model is restored exactly before the next one. Random conditions are summarised as mean and
spread.

>>> conds = build_conditions(map_model(model), [(1, 68), (2, 92)], n_random=3)
>>> results = run_conditions(model, tokenizer, conds, EvalPlan(ppl_ids=stream, seq_len=2048))
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ...models.adapters import ModelMap
from ...models.atoms import Atom, atoms_json, atoms_per_expert, validate_atoms
from ...models.demo import DEMO_PPL, heldout_path
from ...models.experts import Expert, experts_json, validate_experts
from ..generation import generate
from ..perplexity import perplexity
from ..request import EvalFields, Measures
from ..streams import EvalStream, bos_window_stream, eval_stream
from .ablation import ablate
from .atoms import random_atom_controls, zero_atoms
from .controls import random_controls

CONTROL_GROUPS = ("random", "layer-controlled")


@dataclass(frozen=True)
class Condition:
    name: str  # original | super | custom | random-<seed> | layer-controlled-<seed> | an atom criterion's
    experts: list[Expert]
    mode: str  # "none" for the original model
    atoms: list[Atom] = field(default_factory=list)  # zeroed atoms (issue 20), instead of experts
    listed: bool = True  # record the atoms in prune_eval.json (a criterion's set is a count: millions)

    def applied(self, model: torch.nn.Module, means=None) -> contextlib.AbstractContextManager:
        """The condition on `model` inside the block (nothing for the original)."""
        if self.atoms:
            return zero_atoms(model, self.atoms)
        if self.experts:
            return ablate(model, self.experts, mode=self.mode, means=means)
        return contextlib.nullcontext()

    def record(self) -> dict[str, Any]:
        """What prune_eval.json says the condition pruned."""
        out: dict[str, Any] = {"name": self.name, "experts": experts_json(self.experts), "mode": self.mode}
        if self.atoms:
            out["atoms_pruned"] = len(self.atoms)
            if self.listed:
                out["atoms"] = atoms_json(self.atoms)
        return out


@dataclass(kw_only=True)
class EvalPlan(Measures):  # + max_windows, batch_size, tasks, task_manager, limit, num_fewshot, prompts, ...
    """What each condition is measured on; a part left at its default is skipped."""

    ppl_ids: torch.Tensor | None = None  # one token stream
    seq_len: int = 2048
    batch_size: int = 1  # a number: requests resolve their "auto" (Measures.resolve_batch) before the plan


def build_conditions(model_map: ModelMap, experts: list[Expert], *, name: str = "super", mode: str = "zero",
                     n_random: int = 0, layer_controlled: bool = False, seed: int = 0) -> list[Condition]:
    """original, the pruned set, then the random controls (validated against the model)."""
    experts = validate_experts(model_map, experts)
    conditions = [Condition("original", [], "none"), Condition(name, experts, mode)]
    groups = [("random", False)] + ([("layer-controlled", True)] if layer_controlled else [])
    for group, controlled in groups if n_random else []:
        drawn = random_controls(model_map, experts, n_random, layer_controlled=controlled, seed=seed)
        conditions += [Condition(f"{group}-{seed + i}", chosen, mode) for i, chosen in enumerate(drawn)]
    return conditions


def build_atom_conditions(model_map: ModelMap, atoms: list[Atom], *, name: str = "atoms", n_random: int = 0,
                          layer_controlled: bool = False, seed: int = 0) -> list[Condition]:  # fmt: skip
    """original, the zeroed atoms, then random atom controls of the same count (routed atoms, none of
    the given ones; layer-controlled: as many per layer)."""
    atoms = validate_atoms(model_map, atoms)
    conditions = [Condition("original", [], "none"), Condition(name, [], "zero", atoms)]
    groups = [("random", False)] + ([("layer-controlled", True)] if layer_controlled else [])
    for group, controlled in groups if n_random else []:
        drawn = random_atom_controls(atoms_per_expert(model_map), atoms, n_random, layer_controlled=controlled,
                                     seed=seed)  # fmt: skip
        conditions += [Condition(f"{group}-{seed + i}", [], "zero", chosen) for i, chosen in enumerate(drawn)]
    return conditions


def _mean_metrics(generations: list[dict]) -> dict[str, float]:
    keys = generations[0]["metrics"].keys() if generations else []
    return {k: float(np.mean([g["metrics"][k] for g in generations])) for k in keys}


def evaluate_model(model: torch.nn.Module, tokenizer, plan: EvalPlan) -> dict[str, Any]:
    """Perplexity, task scores and generations of the model as it is now."""
    out: dict[str, Any] = {"perplexity": None, "perplexity_detail": None, "tasks": {}, "generations": []}
    if plan.ppl_ids is not None:
        detail = perplexity(model, plan.ppl_ids, seq_len=plan.seq_len, batch_size=plan.batch_size,
                            max_windows=plan.max_windows)  # fmt: skip
        out |= {"perplexity": detail["perplexity"], "perplexity_detail": detail}
    if plan.tasks:
        from ..lm_eval import run_tasks

        out["tasks"] = run_tasks(model, tokenizer, plan.tasks, batch_size=plan.batch_size, limit=plan.limit,
                                 num_fewshot=plan.num_fewshot, task_manager=plan.task_manager)  # fmt: skip
    if plan.prompts:
        out["generations"] = generate(model, tokenizer, plan.prompts, max_new_tokens=plan.max_new_tokens)
        out["generation_metrics"] = _mean_metrics(out["generations"])
    return out


def run_conditions(model: torch.nn.Module, tokenizer, conditions: list[Condition], plan: EvalPlan, *,
                   means=None, progress: bool = False) -> list[dict[str, Any]]:
    """Evaluate every condition; the model is restored after each (also on errors)."""
    results = []
    for cond in tqdm(conditions, desc="conditions", unit="condition", disable=not progress):
        start = time.perf_counter()
        with cond.applied(model, means):
            measured = evaluate_model(model, tokenizer, plan)
        results.append(cond.record() | measured | {"seconds": round(time.perf_counter() - start, 3)})
    return results


def _spread(values: list[float]) -> dict[str, float] | None:
    values = [float(v) for v in values if v is not None]
    if not values:
        return None
    arr = np.array(values)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
            "min": float(arr.min()), "max": float(arr.max()), "n": len(arr)}  # fmt: skip


def _numeric_keys(dicts: list[dict]) -> list[str]:
    keys = []
    for d in dicts:
        keys += [k for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in keys]
    return keys


def summarize(results: list[dict[str, Any]], groups: tuple[str, ...] = CONTROL_GROUPS) -> dict[str, Any]:
    """Mean and spread (sample std, min, max) of each control group's measures.

    >>> summarize(results)["random"]["perplexity"]
    {'mean': 8.71, 'std': 0.01, 'min': 8.70, 'max': 8.72, 'n': 5}
    """
    summary = {}
    for group in groups:
        members = [r for r in results if r["name"].startswith(group + "-")]
        if not members:
            continue
        tasks: dict[str, dict] = {}
        for task in {t for r in members for t in r.get("tasks", {})}:
            per = [r["tasks"].get(task, {}) for r in members]
            tasks[task] = {m: _spread([p.get(m) for p in per]) for m in _numeric_keys(per)}
        gens = [r.get("generation_metrics", {}) for r in members]
        summary[group] = {
            "conditions": [r["name"] for r in members],
            "perplexity": _spread([r.get("perplexity") for r in members]),
            "tasks": tasks,
            "generation_metrics": {m: _spread([g.get(m) for g in gens]) for m in _numeric_keys(gens)},
        }
    return summary


def eval_plan(req: EvalFields, tokenizer, seq_len: int) -> tuple[EvalPlan, dict[str, Any] | None]:
    """What each condition is measured on (any request with the evaluation fields ppl, max_windows,
    batch_size, tasks, prompts, ...: prune-eval and quant-eval measure the same way); perplexity
    tokens come from the one evaluation-stream path."""
    stream: EvalStream | None = None
    if req.ppl == DEMO_PPL:
        stream = bos_window_stream(str(heldout_path()), tokenizer, seq_len)
    elif req.ppl:
        stream = eval_stream(req.ppl, tokenizer, flag="--ppl")
    max_windows = req.max_windows if req.max_windows is not None else stream.max_windows if stream else None
    plan = EvalPlan(**req.measures() | {"max_windows": max_windows}, ppl_ids=stream.token_ids if stream else None,
                    seq_len=seq_len)  # fmt: skip
    described = stream.describe() | {"seq_len": seq_len, "max_windows": max_windows} if stream else None
    return plan, described
