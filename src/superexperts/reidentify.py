"""Re-identify the SEs of a saved run folder without the model (`superexperts identify`, `compare`).

    >>> result = reidentify_run("runs/qwen3", "reap", {"percentile": 99})
    >>> result.verdict.experts, result.known["agrees"]
    ([(1, 68), (2, 92), (3, 82)], True)

Rewrites super_experts.json and sensitivity.json all-or-nothing; expert_stats.csv/.parquet are
kept, and re-created from profile.json when missing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from . import known
from .ablate.spec import experts_from_records
from .compare import RunSEs
from .io import json_bytes, write_files
from .meta import base_metadata
from .profile import Profile
from .rules import Verdict, criterion_defaults, identify
from .run import load_profile, load_super_experts, run_files, super_experts_json
from .sensitivity import sensitivity, sensitivity_json

EXPORTS = ("expert_stats.csv", "expert_stats.parquet")


def sensitivity_setup(criterion: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The Table 9 grid varies percentile and max_fraction: use the criterion when it has both
    (paper, reap), else the paper rule over the same layers."""
    defaults = criterion_defaults(criterion)
    if {"percentile", "max_fraction"} <= defaults.keys():
        name = criterion
    else:
        name = "paper"
    accepted = criterion_defaults(name).keys() - {"percentile", "max_fraction"}
    kept = {k: v for k, v in params.items() if k in accepted}
    return name, kept


def identification_files(prof: Profile, verdict: Verdict, grid: pd.DataFrame, grid_criterion: str,
                         *, command: str, known_agreement: dict[str, Any] | None = None) -> dict[str, bytes]:
    """super_experts.json and sensitivity.json of a verdict, with the run's and this command's metadata
    (and the agreement with the paper's published SEs when the model has an entry)."""
    provenance = base_metadata(tool=command)
    extra = {"known": known_agreement, "meta": prof.meta, "provenance": provenance}
    ses = super_experts_json(verdict) | extra
    grid_json = sensitivity_json(grid, criterion=grid_criterion) | {"provenance": provenance}
    return {
        "super_experts.json": json_bytes(ses),
        "sensitivity.json": json_bytes(grid_json),
    }


class Reidentified(NamedTuple):
    verdict: Verdict
    grid: pd.DataFrame  # the sensitivity table
    grid_criterion: str  # the rule the grid varies (paper or reap)
    known: dict[str, Any] | None  # `known.agreement` when the run's model has published SEs


def known_agreement(meta: dict[str, Any], verdict: Verdict) -> dict[str, Any] | None:
    """Agreement with the paper's SEs for the model a run names (meta 'model' or 'name_or_path')."""
    entry = known.lookup(meta.get("model") or meta.get("name_or_path"))
    return known.agreement(verdict, entry) if entry is not None else None


def reidentify_run(run_dir: str | os.PathLike, criterion: str = "paper", params: dict[str, Any] | None = None
                   ) -> Reidentified:
    """Apply `criterion` to a run folder's profile.json; write super_experts.json + sensitivity.json.
    Everything is computed before anything is written: bad input leaves the folder untouched."""
    params = dict(params or {})
    prof = load_profile(run_dir)
    verdict = identify(prof.expert_stats, prof.num_layers, criterion, **params)
    grid_criterion, grid_params = sensitivity_setup(criterion, params)
    grid = sensitivity(prof.expert_stats, prof.num_layers, criterion=grid_criterion, **grid_params)
    agreement = known_agreement(prof.meta, verdict)
    files: dict[str, Any] = identification_files(prof, verdict, grid, grid_criterion, command="identify",
                                                 known_agreement=agreement)
    missing = [name for name in EXPORTS if not (Path(run_dir) / name).is_file()]
    if missing:
        exports = run_files(prof, verdict)
        files |= {name: exports[name] for name in missing}
    write_files(run_dir, files)
    return Reidentified(verdict, grid, grid_criterion, agreement)


def load_run_ses(run_dir: str | os.PathLike, name: str, criterion: str | None = None,
                 params: dict[str, Any] | None = None) -> RunSEs:
    """A run folder as `compare` input: its expert table and SEs - those saved in super_experts.json,
    or, with `criterion`, re-identified from profile.json (nothing is written)."""
    prof = load_profile(run_dir)
    if criterion is None:
        experts = experts_from_records(load_super_experts(run_dir), f"{run_dir}/super_experts.json")
    else:
        experts = identify(prof.expert_stats, prof.num_layers, criterion, **(params or {})).experts
    return RunSEs(name, prof.expert_stats, experts)
