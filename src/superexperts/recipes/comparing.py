"""The compare recipe: two or more run folders -> did they find the same Super Experts?

Each run's SEs are those saved in its super_experts.json or, with a criterion, re-identified
from profile.json (nothing is written into the runs). Optionally writes compare.json + figures.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..identify.compare import Comparison, RunSEs, compare
from ..identify.profile_run import load_profile
from ..identify.rules import get_criterion, identify
from ..models.experts import experts_from_records
from ..report.compare_figures import compare_figure_files
from ..runs.errors import UserError
from ..runs.runfolder import base_metadata, json_bytes, load_super_experts, write_files
from ..runs.safety import check_record_out


@dataclass(frozen=True)
class CompareRequest:
    run_dirs: list[str]
    out: str | None = None  # folder for compare.json and the scatter figure
    criterion: str | None = None  # None: the SEs saved in each run
    params: dict[str, Any] = field(default_factory=dict)
    overwrite: bool = False  # replace an earlier compare.json in `out`

    def __post_init__(self) -> None:
        if len(self.run_dirs) < 2:
            raise UserError("compare needs at least two RUN_DIRs.")
        if len({Path(d).resolve() for d in self.run_dirs}) != len(self.run_dirs):
            raise UserError("the same RUN_DIR is given twice; pass different run folders.")
        if self.out:  # beside other files is fine; into a compared run or over an earlier compare is not
            check_record_out(self.out, self.run_dirs, "compare.json", overwrite=self.overwrite)
        if self.criterion is not None:
            get_criterion(self.criterion)


def run_names(run_dirs: list[str]) -> list[str]:
    """Folder names, or the paths as given when two folders share a name."""
    names = [Path(d).resolve().name or str(d) for d in run_dirs]
    return names if len(set(names)) == len(names) else [str(d) for d in run_dirs]


def load_run_ses(run_dir: str | os.PathLike, name: str, criterion: str | None = None,
                 params: dict[str, Any] | None = None) -> RunSEs:
    """A run folder as `compare` input: its expert table and SEs - those saved in super_experts.json,
    or, with `criterion`, re-identified from profile.json (nothing is written)."""
    prof = load_profile(run_dir)
    if criterion is None:
        if not (Path(run_dir) / "super_experts.json").is_file():
            raise UserError(f"{run_dir} has no super_experts.json; re-create it with `superexperts identify --from "
                            f"{run_dir}`, or pass --criterion to re-identify every run.")  # fmt: skip
        experts = experts_from_records(load_super_experts(run_dir), f"{run_dir}/super_experts.json")
    else:
        experts = identify(prof.expert_stats, prof.num_layers, criterion, **(params or {})).experts
    return RunSEs(name, prof.expert_stats, experts)


def run_compare(req: CompareRequest, *, before_write: Callable[[Comparison], None] = lambda _: None) -> Comparison:
    """Compare the runs; `before_write` sees the result before compare.json is written (the CLI prints
    it there: a reader gone stops the write)."""
    runs = [load_run_ses(d, n, req.criterion, req.params) for d, n in zip(req.run_dirs, run_names(req.run_dirs))]
    result = compare(runs)
    before_write(result)
    if req.out:
        how = {"name": req.criterion, **req.params} if req.criterion else "saved super_experts.json"
        meta = base_metadata(tool="compare", run_dirs=[str(d) for d in req.run_dirs], criterion=how)
        write_files(req.out, {"compare.json": json_bytes(result.to_json() | {"meta": meta}),
                              **compare_figure_files(runs)})  # fmt: skip
    return result
