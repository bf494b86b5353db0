"""Guards for output paths: an `--out` never destroys an input or a folder we did not write.

`--overwrite` may only replace an earlier output of the same command (recognised by the record
file that command writes into every output, e.g. `superexperts_export.json`) or an empty folder.
Inputs are compared after resolving links, so a link into the checkpoint is caught too.

    >>> target = check_out_path("pruned/", ["Qwen3-30B-A3B/"], "superexperts_export.json", overwrite=True)
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from pathlib import Path

from .errors import UserError


def _real(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(os.path.expanduser(path)))


def _check_inputs(out: str | os.PathLike, inputs: Iterable[str | os.PathLike | None], flag: str) -> Path:
    """`out` resolved; a UserError when it equals, contains or lies inside an existing input."""
    target = _real(out)
    for item in inputs:
        if item is None or not os.path.lexists(os.path.expanduser(item)):
            continue
        real = _real(item)
        if target == real or target in real.parents:
            raise UserError(f"{flag} {out} is or contains the input {item}; choose a folder outside it.")
        if real in target.parents:
            raise UserError(f"{flag} {out} is inside the input {item}; choose a folder outside it.")
    return target


def check_record_out(out: str | os.PathLike, inputs: Iterable[str | os.PathLike | None], record: str, *,
                     overwrite: bool, flag: str = "--out") -> Path:  # fmt: skip
    """The resolved folder for a command that adds its files to a folder (prune-eval, sinks, compare
    write beside a run's files): never an input, a file or a broken link, and an earlier `record`
    there is replaced only with `overwrite`. Other files in the folder are left alone, so a
    non-empty folder is fine (a run folder is the usual target)."""
    target = _check_inputs(out, inputs, flag)
    if os.path.lexists(os.path.expanduser(out)) and not target.exists():
        raise UserError(f"{flag} {out} is a broken link; remove it or choose another folder.")
    if target.exists() and not target.is_dir():
        raise UserError(f"{flag} {out} is a file, not a folder; choose a folder path.")
    if (target / record).exists() and not overwrite:
        raise UserError(f"{flag} {out} already holds {record}; pass --overwrite to replace it or choose another folder.")
    return target


def check_out_path(out: str | os.PathLike, inputs: Iterable[str | os.PathLike | None], own_marker: str, *,
                   overwrite: bool, flag: str = "--out") -> Path:  # fmt: skip
    """The resolved folder to write `out` into, or a UserError when writing it could destroy data.

    Refused: an `out` that equals, contains or lies inside an existing input (links resolved) or
    contains the current folder; an existing file or broken link; a non-empty folder without
    `overwrite`, or with it when the folder does not hold `own_marker` (not our earlier output).
    Inputs that do not exist (hub ids, `None`) are skipped: nothing of them can be destroyed.
    """
    target = _check_inputs(out, inputs, flag)
    cwd = _real(os.getcwd())
    if target == cwd or target in cwd.parents:
        raise UserError(f"{flag} {out} is the current folder or contains it; name a new folder, e.g. {flag} pruned.")
    if os.path.lexists(os.path.expanduser(out)) and not target.exists():
        raise UserError(f"{flag} {out} is a broken link; remove it or choose another folder.")
    if target.exists() and not target.is_dir():
        raise UserError(f"{flag} {out} is a file, not a folder; choose a folder path.")
    if target.is_dir() and any(target.iterdir()):
        if not overwrite:
            raise UserError(f"{flag} {out} exists and is not empty; pass --overwrite or choose another folder.")
        if not (target / own_marker).is_file():
            raise UserError(f"{flag} {out} holds files this command did not write (no {own_marker}); "
                            "--overwrite only replaces its own earlier output or an empty folder; "
                            "choose another folder.")  # fmt: skip
    return target


def os_error_reason(e: OSError) -> str:
    """Short cause of a failed write for a one-line message ('the disk is full', 'Permission denied')."""
    if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return "the disk is full"
    return e.strerror or str(e)
