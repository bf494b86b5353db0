"""Atomic writes and run folders: a run folder is either complete or untouched."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .errors import UserError
from .safety import os_error_reason
from .staging import make_staging, usual_mode

# Files a run folder may hold; `write_run` refuses to mix a new run with an old one's files.
RUN_MARKER = "profile.json"


def to_jsonable(obj: Any) -> Any:
    """Plain JSON types; NaN/inf become strings so the file stays valid JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return to_jsonable(obj.item())
    return obj


def json_bytes(obj: Any) -> bytes:
    return (json.dumps(to_jsonable(obj), indent=2) + "\n").encode()


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Write via a temp file in the same folder and rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        usual_mode(Path(tmp))  # mkstemp makes 0600; the result gets what a plain open would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write(path, json_bytes(obj))


FileWriter = Callable[[Path], None]


def write_files(out_dir: str | os.PathLike, files: Mapping[str, bytes | FileWriter]) -> None:
    """Write several files into `out_dir` all-or-nothing.

    Each value is bytes or a function that writes the file at the path it is given (for
    matplotlib, parquet...). Everything is written into a staging folder first, then moved in;
    on any error nothing in `out_dir` changes.
    """
    out = Path(out_dir)
    created = [p for p in [out, *out.parents] if not p.exists()]
    moved: list[str] = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        staging = make_staging(out, ".staging-")  # also sweeps those of killed runs
        try:
            for name, content in files.items():
                target = staging / name
                target.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(content, (bytes, bytearray)):
                    target.write_bytes(content)
                else:
                    content(target)
            for name in files:
                (out / name).parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging / name, out / name)
                moved.append(name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as e:
        for folder in created:  # innermost first; only the empty folders this call made
            with contextlib.suppress(OSError):
                folder.rmdir()
        done = f"only {', '.join(moved)} were replaced" if moved else "nothing was written"
        raise UserError(f"writing {out} failed ({os_error_reason(e)}); {done}.") from None


def prepare_out_dir(out_dir: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse to mix with a previous run's files unless `overwrite`."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder; pass a folder path.")
    if out.is_dir() and (out / RUN_MARKER).exists() and not overwrite:
        raise UserError(f"{out} already holds a run ({RUN_MARKER}); pass --overwrite or choose another --out.")
    return out


def read_json(path: str | os.PathLike, what: str) -> Any:
    """Read a JSON file with a one-line error for missing or damaged files."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}; run `superexperts profile --out {path.parent}` first.")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is damaged or partial JSON ({e.msg if hasattr(e, 'msg') else e}); re-create it.")
