"""What an export may write, checked before torch loads: the mode, the source folder and --out
(`RECORD` marks a folder of our earlier export, the only kind --overwrite replaces)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ...runs.errors import UserError
from ...runs.safety import check_out_path

MODES = ("zero",)
RECORD = "superexperts_export.json"  # written into every export; marks a folder --overwrite may replace


def check_export_target(model_dir: str | os.PathLike, out_dir: str | os.PathLike, *, mode: str, overwrite: bool,
                        inputs: Iterable[str | os.PathLike | None] = ()) -> Path:  # fmt: skip
    """The resolved --out of an export of `model_dir`, or a UserError: a mode that cannot be
    exported, a source that is not a local folder, an --out that `check_out_path` refuses
    (never `model_dir` or an input, inside or around them)."""
    if mode not in MODES:
        raise UserError(f"--mode {mode!r} cannot be exported; available: {', '.join(MODES)} (mean/skip need the model).")
    source = Path(model_dir)
    if not source.is_dir():
        raise UserError(f"model folder not found: {source}; export works on a local checkpoint folder.")
    return check_out_path(out_dir, [source, *inputs], RECORD, overwrite=overwrite, checkpoint_ok=True)
