"""Guards for output paths: an `--out` never destroys an input or a file we did not write.

One placement rule for every writer, folders and single files alike (issue 23):
- links are resolved before anything is decided, and the resolved path is what is checked;
- never a device, pipe, socket or system path (/dev/full, /dev/stdout = /proc/self/fd/1);
- never into a folder that holds a model checkpoint (config.json beside weights), never equal to,
  inside or around an input of the command;
- never over a run's own input files (profile.json, super_experts.json, the expert tables), even
  with `--overwrite`; `--overwrite` replaces only a file this tool wrote (recognised by its
  provenance record, `"tool": "superexperts"`) or an empty folder;
- the folder written into must be writable (a read-only mount fails here, before any work).

    >>> target = check_out_path("pruned/", ["Qwen3-30B-A3B/"], "superexperts_export.json", overwrite=True)
    >>> target = check_out_file("keep.yaml", ["runs/qwen3"], overwrite=False)
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from pathlib import Path

from .errors import UserError

# The files a profile run is made of: what every other command reads. Only `profile` and
# `identify` (the run's own writers) may replace them.
RUN_INPUT_FILES = ("profile.json", "super_experts.json", "expert_stats.csv", "expert_stats.parquet")
WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "*.bin", "*.bin.index.json", "*.gguf", "*.pt")
SYSTEM_ROOTS = ("/dev", "/proc", "/sys")
# Provenance our files carry: JSON (`base_metadata`), the protect YAML's first comment, our HTML pages.
OWN_SIGNS = (b'"tool": "superexperts"', b"# superexperts ", b"superexperts")
OWN_SCAN_BYTES = 64 << 20


def _real(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(os.path.expanduser(path)))


def holds_checkpoint(folder: Path) -> bool:
    """A model checkpoint folder: config.json beside weight files."""
    return (folder / "config.json").is_file() and any(next(folder.glob(p), None) for p in WEIGHT_PATTERNS)


def written_by_us(path: Path) -> bool:
    """Whether `path` is a file this tool wrote (its provenance record), read without following more links."""
    try:
        if not path.is_file() or path.stat().st_size > OWN_SCAN_BYTES:
            return False
        data = path.read_bytes()
    except OSError:
        return False
    if path.suffix in (".html", ".htm"):
        return OWN_SIGNS[2] in data[:1 << 20] or OWN_SIGNS[2] in data[-(1 << 20):]
    return OWN_SIGNS[0] in data or data.startswith(OWN_SIGNS[1])


def _check_inputs(out: str | os.PathLike, inputs: Iterable[str | os.PathLike | None], flag: str) -> Path:
    """`out` resolved; a UserError when it equals, contains or lies inside an existing input, is a
    system path or a device/pipe, or is a broken link."""
    target = _real(out)
    given = Path(os.path.abspath(os.path.expanduser(out)))  # /dev/stdout resolves to a pipe, a tty or a temp file
    if any(p == Path(root) or Path(root) in p.parents for root in SYSTEM_ROOTS for p in (given, target)):
        raise UserError(f"{flag} {out} is a device or system path ({target}); name a regular file or folder.")
    if os.path.lexists(os.path.expanduser(out)) and not target.exists():
        raise UserError(f"{flag} {out} is a broken link; remove it or choose another path.")
    if target.exists() and not (target.is_dir() or target.is_file()):
        raise UserError(f"{flag} {out} is a device, pipe or socket, not a file; name a regular file or folder.")
    for item in inputs:
        if item is None or not os.path.lexists(os.path.expanduser(item)):
            continue
        real = _real(item)
        if target == real or target in real.parents:
            raise UserError(f"{flag} {out} is or contains the input {item}; choose a folder outside it.")
        if real in target.parents:
            raise UserError(f"{flag} {out} is inside the input {item}; choose a folder outside it.")
    return target


def _check_writable(out: str | os.PathLike, target: Path, flag: str) -> None:
    """The nearest existing folder of `target` accepts new files (a read-only mount refuses even root)."""
    folder = target if target.is_dir() else target.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise UserError(f"{flag} {out}: {folder} is a file, not a folder; choose another path.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {out}: the folder {folder} is not writable (read-only or no permission); "
                        "choose another path.")  # fmt: skip


def _check_not_checkpoint(out: str | os.PathLike, folder: Path, flag: str) -> None:
    if folder.is_dir() and holds_checkpoint(folder):
        raise UserError(f"{flag} {out} is a model checkpoint folder ({folder}); write results outside it.")


def check_record_out(out: str | os.PathLike, inputs: Iterable[str | os.PathLike | None], record: str, *,
                     overwrite: bool, flag: str = "--out", also: Iterable[str] = ()) -> Path:  # fmt: skip
    """The resolved folder for a command that adds its files to a folder (prune-eval, sinks, compare,
    quant-eval, audit write beside a run's files): never an input, a file, a checkpoint folder; an
    earlier `record` (or the `also` files written with it) is replaced only with `overwrite`, and only
    when this tool wrote it. Other files in the folder are left alone, so a non-empty folder is fine
    (a run folder is the usual target)."""
    target = _check_inputs(out, inputs, flag)
    if target.exists() and not target.is_dir():
        raise UserError(f"{flag} {out} is a file, not a folder; choose a folder path.")
    _check_not_checkpoint(out, target, flag)
    for name in (record, *also):
        if (target / name).exists() or (target / name).is_symlink():
            if not overwrite:
                raise UserError(f"{flag} {out} already holds {name}; pass --overwrite to replace it or choose "
                                "another folder.")  # fmt: skip
            if (target / name).is_symlink() or not written_by_us(target / name):
                raise UserError(f"{flag} {out} holds a {name} that superexperts did not write; --overwrite only "
                                "replaces its own earlier output; choose another folder.")  # fmt: skip
    _check_writable(out, target, flag)
    return target


def check_out_path(out: str | os.PathLike, inputs: Iterable[str | os.PathLike | None], own_marker: str, *,
                   overwrite: bool, flag: str = "--out", checkpoint_ok: bool = False) -> Path:  # fmt: skip
    """The resolved folder to write `out` into, or a UserError when writing it could destroy data.

    Refused: an `out` that equals, contains or lies inside an existing input (links resolved) or
    contains the current folder; an existing file, device or broken link; a non-empty folder without
    `overwrite`, or with it when the folder does not hold `own_marker` (not our earlier output); a
    checkpoint folder (unless `checkpoint_ok`: export writes checkpoints); a read-only place.
    Inputs that do not exist (hub ids, `None`) are skipped: nothing of them can be destroyed.
    """
    target = _check_inputs(out, inputs, flag)
    cwd = _real(os.getcwd())
    if target == cwd or target in cwd.parents:
        raise UserError(f"{flag} {out} is the current folder or contains it; name a new folder, e.g. {flag} pruned.")
    if target.exists() and not target.is_dir():
        raise UserError(f"{flag} {out} is a file, not a folder; choose a folder path.")
    if not checkpoint_ok:
        _check_not_checkpoint(out, target, flag)
    if target.is_dir() and any(target.iterdir()):
        if not overwrite:
            raise UserError(f"{flag} {out} exists and is not empty; pass --overwrite or choose another folder.")
        if not (target / own_marker).is_file():
            raise UserError(f"{flag} {out} holds files this command did not write (no {own_marker}); "
                            "--overwrite only replaces its own earlier output or an empty folder; "
                            "choose another folder.")  # fmt: skip
    _check_writable(out, target, flag)
    if checkpoint_ok:  # export stages its copy beside the folder, then swaps it in
        _check_writable(out, target.parent, flag)
    return target


def check_out_file(out: str | os.PathLike, inputs: Iterable[str | os.PathLike | None], *, overwrite: bool,
                   flag: str = "--out") -> Path:  # fmt: skip
    """The resolved path for a command that writes one file (protect): never a folder, a device, an
    input, a run's own files (even with `overwrite`), a file in a checkpoint folder, a link to a file
    this tool did not write, or an existing file without `overwrite` / not written by this tool."""
    target = _check_inputs(out, inputs, flag)
    if target.is_dir():
        raise UserError(f"{flag} {out} is a folder; pass a file path such as {out}/protect.yaml.")
    if target.name in RUN_INPUT_FILES and (target.parent / RUN_INPUT_FILES[0]).is_file():
        raise UserError(f"{flag} {out} is a run's own {target.name}, which other commands read; "
                        "write to another file.")  # fmt: skip
    _check_not_checkpoint(out, target.parent, flag)
    if os.path.islink(os.path.expanduser(out)) and not written_by_us(target):
        raise UserError(f"{flag} {out} is a link to {target}, a file superexperts did not write; "
                        "name the file itself or another path.")  # fmt: skip
    if target.exists():
        if not overwrite:
            raise UserError(f"{flag} {out} exists; pass --overwrite to replace it or choose another file.")
        if not written_by_us(target):
            raise UserError(f"{flag} {out} is a file superexperts did not write; --overwrite only replaces "
                            "its own earlier output; choose another file.")  # fmt: skip
    _check_writable(out, target, flag)
    return target


def check_folder_writable(folder: str | os.PathLike, flag: str = "RUN_DIR") -> Path:
    """A folder a command rewrites in place (identify and report: the run folder itself): no system
    path or device, and writable, checked before any work."""
    target = _check_inputs(folder, [], flag)
    _check_writable(folder, target, flag)
    return target


def os_error_reason(e: OSError) -> str:
    """Short cause of a failed write for a one-line message ('the disk is full', 'Permission denied')."""
    if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return "the disk is full"
    if e.errno == errno.EROFS:
        return "the file system is read-only"
    return e.strerror or str(e)
