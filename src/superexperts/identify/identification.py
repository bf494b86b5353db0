"""Identify -> sensitivity -> agreement with the paper -> files: one path for `profile` and `identify`.

    >>> ident = identification(prof, "reap", {"percentile": 99}, command="identify")
    >>> ident.verdict.experts, ident.known["agrees"]
    ([(1, 68), (2, 92), (3, 82)], True)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import pandas as pd

from ..capture.profile import Profile
from ..runs.runfolder import base_metadata, json_bytes
from . import known
from .profile_run import super_experts_json
from .rules import Verdict, criterion_defaults, identify
from .sensitivity import sensitivity, sensitivity_json


def sensitivity_setup(criterion: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The Table 9 grid varies percentile and max_fraction: use the criterion when it has both
    (paper, reap), else the paper rule over the same layers."""
    defaults = criterion_defaults(criterion)
    name = criterion if {"percentile", "max_fraction"} <= defaults.keys() else "paper"
    accepted = criterion_defaults(name).keys() - {"percentile", "max_fraction"}
    return name, {k: v for k, v in params.items() if k in accepted}


def known_agreement(meta: dict[str, Any], verdict: Verdict) -> dict[str, Any] | None:
    """Agreement with the paper's SEs for the model a run names (meta 'model' or 'name_or_path')."""
    entry = known.lookup(meta.get("model") or meta.get("name_or_path"))
    return known.agreement(verdict, entry) if entry is not None else None


class Identification(NamedTuple):
    verdict: Verdict
    grid: pd.DataFrame  # the sensitivity table
    grid_criterion: str  # the rule the grid varies (paper or reap)
    known: dict[str, Any] | None  # `known.agreement` when the run's model has published SEs
    files: dict[str, bytes]  # super_experts.json and sensitivity.json


def identification(prof: Profile, criterion: str = "paper", params: dict[str, Any] | None = None, *,
                   command: str) -> Identification:
    """Apply `criterion` to a profile, vary it over the Table 9 grid, compare with the paper, and
    render super_experts.json + sensitivity.json (with the run's and this command's metadata)."""
    params = dict(params or {})
    verdict = identify(prof.expert_stats, prof.num_layers, criterion, **params)
    grid_criterion, grid_params = sensitivity_setup(criterion, params)
    grid = sensitivity(prof.expert_stats, prof.num_layers, criterion=grid_criterion, **grid_params)
    agreement = known_agreement(prof.meta, verdict)
    provenance = base_metadata(tool=command)
    ses = super_experts_json(verdict, prof.atom_stats) | {"known": agreement, "meta": prof.meta, "provenance": provenance}
    files = {
        "super_experts.json": json_bytes(ses),
        "sensitivity.json": json_bytes(sensitivity_json(grid, criterion=grid_criterion) | {"provenance": provenance}),
    }
    return Identification(verdict, grid, grid_criterion, agreement, files)
