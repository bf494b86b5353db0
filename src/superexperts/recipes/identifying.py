"""The identify recipe: a saved run folder + a criterion -> super_experts.json and sensitivity.json.

No model: the criterion is applied to profile.json. Everything is computed before anything is
written, so bad input leaves the folder untouched; expert_stats.csv/.parquet are kept, and
re-created from profile.json when missing.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..identify.identification import Identification, identification
from ..identify.profile_run import load_profile, run_files
from ..identify.rules import get_criterion
from ..runs.runfolder import write_files
from ..runs.safety import check_folder_writable

EXPORTS = ("expert_stats.csv", "expert_stats.parquet")


@dataclass(frozen=True)
class IdentifyRequest:
    run_dir: str | os.PathLike
    criterion: str = "paper"
    params: dict[str, Any] = field(default_factory=dict)
    report: bool = True  # re-render an existing report.html

    def __post_init__(self) -> None:
        get_criterion(self.criterion)


def run_identify(req: IdentifyRequest, *, before_write: Callable[[Identification], None] = lambda _: None
                 ) -> tuple[Identification, Path | None]:  # fmt: skip
    """(the identification, the refreshed report or None). `before_write` sees the identification
    before any file is written (the CLI prints it there: a reader gone stops the writes)."""
    prof = load_profile(req.run_dir)
    check_folder_writable(req.run_dir)
    ident = identification(prof, req.criterion, req.params, command="identify")
    before_write(ident)
    files: dict[str, Any] = dict(ident.files)
    missing = [name for name in EXPORTS if not (Path(req.run_dir) / name).is_file()]
    if missing:
        exports = run_files(prof, ident.verdict)
        files |= {name: exports[name] for name in missing}
    write_files(req.run_dir, files)
    if req.report and (Path(req.run_dir) / "report.html").is_file():
        from ..report import write_report  # matplotlib and the page builders: only when needed

        return ident, write_report(req.run_dir)
    return ident, None
