"""What a report is made from: a run folder read back into a Profile, a Verdict and optional files.

>>> inputs = load_inputs("runs/qwen3")
>>> inputs.verdict.experts
[(1, 68), (2, 92), (3, 82)]
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..capture.profile import Profile
from ..identify.profile_run import load_profile
from ..identify.rules import Verdict, identify
from ..runs.errors import UserError
from ..runs.runfolder import RESULT_FILES, model_mismatch, read_json, rerun_command, stale_reason


@dataclass
class ReportInputs:
    run_dir: Path
    profile: Profile
    verdict: Verdict
    notes: list[str] = field(default_factory=list)  # caveats shown in the summary
    saved: dict[str, Any] = field(default_factory=dict)  # super_experts.json as written (e.g. "known")
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def optional(self, name: str) -> tuple[dict[str, Any] | None, str | None]:
        """(content, error) of an optional JSON file of the run; (None, None) when absent.

        A damaged optional file does not stop the report: its section shows the error instead.
        """
        if name not in self._cache:
            path = self.run_dir / name
            if not path.is_file():
                self._cache[name] = (None, None)
            else:
                try:
                    data = read_json(path, name)
                    self._cache[name] = (
                        (data, None) if isinstance(data, dict) else (None, f"{name} is not an object")
                    )
                except UserError as e:
                    self._cache[name] = (None, str(e))
        return self._cache[name]

    def stale(self, name: str) -> tuple[str, str] | None:
        """(why, the command that re-creates it) when result file `name` no longer matches the run's
        SEs or profile (runfolder.stale_reason); None when it matches, is absent or is damaged."""
        data, _ = self.optional(name)
        if data is None:
            return None
        reason = stale_reason(self.run_dir, data)
        if reason is None:
            return None
        command = next(f.command for f in RESULT_FILES if f.name == name)
        return reason, rerun_command(data, self.run_dir, command)

    def foreign(self, name: str) -> bool:
        """Whether result file `name` was computed on another model than the run profiled."""
        data, _ = self.optional(name)
        return data is not None and model_mismatch(self.run_dir, data) is not None


def verdict_from_saved(table: pd.DataFrame, saved: dict[str, Any]) -> Verdict:
    """The Verdict of super_experts.json, with rows taken from the expert table (no re-identification)."""
    try:
        criterion = dict(saved["criterion"])
        listed = {(int(e["layer"]), str(e["expert"])) for e in saved["super_experts"]}
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"super_experts.json is damaged ({e!r}); re-run `superexperts identify --from RUN_DIR`.")
    key = (
        table["layer"].astype(int).astype(str)
        + ":"
        + table["expert"].astype(str).where(table["kind"] == "routed", table["kind"])
    )
    mask = key.isin({f"{layer}:{expert}" for layer, expert in listed})
    if int(mask.sum()) != len(listed):
        raise UserError("super_experts.json lists experts that are not in profile.json; "
                        "re-run `superexperts identify --from RUN_DIR`.")  # fmt: skip
    ses = table[mask].sort_values("max_abs_output", ascending=False, kind="stable").reset_index(drop=True)
    judged = criterion.get("layers_judged")
    pool = table[table["kind"] != "dense"]
    if isinstance(judged, list) and judged:
        pool = pool[pool["layer"].isin(judged)]
    return Verdict(criterion, ses, pool)


def _numeric(table: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    table = table.copy()
    for column in columns:
        table[column] = pd.to_numeric(table[column], errors="coerce")
    return table


def numeric_tables(prof: Profile) -> Profile:
    """profile.json stores inf/nan as strings ("inf") to stay valid JSON; read them back as floats
    so an overflowed expert (bf16) sorts and plots instead of turning its column into text."""
    experts = _numeric(prof.expert_stats, ["max_abs_output", "max_output", "max_abs_input"])
    value_columns = [c for c in prof.layer_stats.columns if c.endswith("_abs")]
    return Profile(experts, _numeric(prof.layer_stats, value_columns), prof.meta, prof.atom_stats)


def load_inputs(run_dir: str | os.PathLike) -> ReportInputs:
    """Validate and read a run folder; raises UserError with a one-line fix when it is not one."""
    run = Path(run_dir)
    if not run.is_dir():
        raise UserError(f"{run} is not a folder; pass a run folder written by `superexperts profile --out`.")
    if not (run / "profile.json").is_file():
        results = [f.name for f in RESULT_FILES if (run / f.name).is_file()]
        if results:  # written with --out outside a run: they record what they rest on, but no run to report
            raise UserError(f"{run} holds {', '.join(results)} but no profile.json: these results do not rest on a "
                            "profile run (computed_for in each says which experts and model they were computed "
                            "for), and a report shows a run; write them into one: the same command with --from "
                            "RUN_DIR and without --out.")  # fmt: skip
        raise UserError(
            f"{run} holds no profile.json; pass a run folder written by `superexperts profile --out`."
        )
    prof = numeric_tables(load_profile(run))
    notes, saved = [], {}
    if (run / "super_experts.json").is_file():
        saved = read_json(run / "super_experts.json", "super_experts.json")
        verdict = verdict_from_saved(prof.expert_stats, saved)
    else:
        verdict = identify(prof.expert_stats, prof.num_layers)
        notes.append("super_experts.json is missing: the Super Experts were re-identified with the default "
                     "'paper' rule.")  # fmt: skip
    return ReportInputs(run, prof, verdict, notes, saved if isinstance(saved, dict) else {})
