"""The `profile` recipe: model + calibration data -> run folder (tables, verdict, sensitivity, report).

Thin wiring of library pieces; the CLI parses arguments and calls `profile_run`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import known
from .data import Calibration
from .io import write_files
from .loading import Loaded
from .meta import base_metadata
from .profile import Profile, profile
from .reidentify import identification_files, sensitivity_setup
from .rules import Verdict, identify
from .run import run_files
from .sensitivity import sensitivity


@dataclass
class ProfileRun:
    profile: Profile
    verdict: Verdict
    known: dict[str, Any] | None  # agreement with the paper's published SEs, when the model is known
    sensitivity_verdict: str
    out_dir: Path


def _known_agreement(loaded: Loaded, verdict: Verdict) -> dict[str, Any] | None:
    entry = known.lookup(loaded.spec) if loaded.spec else None
    return known.agreement(verdict, entry) if entry is not None else None


def profile_run(
    loaded: Loaded,
    calib: Calibration,
    out_dir: str | os.PathLike,
    *,
    batch_size: int | str = "auto",
    criterion: str = "paper",
    params: dict[str, Any] | None = None,
    progress: bool = False,
    report: bool = True,
    profiler: Callable[..., Profile] = profile,
) -> ProfileRun:
    """Profile, identify, and write the run folder all-or-nothing (then the report).

    `profiler` replaces `superexperts.profile` (same signature), e.g. layer streaming (`--stream`).
    """
    from .sensitivity import sensitivity_verdict

    params = dict(params or {})
    prof = profiler(loaded.model, calib.input_ids, batch_size=batch_size, tokenizer=loaded.tokenizer, progress=progress)
    prof.meta |= loaded.describe() | {"data": calib.describe()} | base_metadata(tool="profile", seed=calib.seed)
    verdict = identify(prof.expert_stats, prof.num_layers, criterion, **params)
    grid_criterion, grid_params = sensitivity_setup(criterion, params)
    grid = sensitivity(prof.expert_stats, prof.num_layers, criterion=grid_criterion, **grid_params)
    agreement = _known_agreement(loaded, verdict)
    files: dict[str, Any] = run_files(prof, verdict)
    files |= identification_files(prof, verdict, grid, grid_criterion, command="profile", known_agreement=agreement)
    write_files(out_dir, files)
    if report:
        from .report import write_report

        write_report(out_dir)
    return ProfileRun(prof, verdict, agreement, sensitivity_verdict(grid), Path(out_dir))
