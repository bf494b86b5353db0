"""Hidden staging folders named after the process that owns them, swept when their owner is gone.

A run killed with SIGKILL cannot clean up, and a partial export copy can be hundreds of GB. So
every staging folder carries its owner's pid (`.staging-<pid>-<random>`); the next run removes
those of its prefix whose owner no longer runs (or whose pid was reused by a younger process).
Only names of our own prefix + pid pattern are ever touched.

Results get the usual permissions (0666/0777 minus the umask), not mkdtemp's 0700/mkstemp's 0600,
so a serving process or another user can read an export.

    >>> staging = make_staging(Path("runs/qwen3"), ".staging-")   # sweeps stale ones first
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@functools.cache
def umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: read by setting it, and put it back at once
    os.umask(mask)
    return mask


def usual_mode(path: Path) -> None:
    """Give a file or folder made by mkstemp/mkdtemp the permissions a plain open/mkdir would."""
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask())


def _boot_time() -> float | None:
    try:
        line = next(x for x in Path("/proc/stat").read_text().splitlines() if x.startswith("btime "))
        return float(line.split()[1])
    except (OSError, StopIteration, ValueError):
        return None


def _started(pid: int) -> float | None:
    """Unix time process `pid` started (Linux), None when unknown."""
    boot = _boot_time()
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK") if boot is not None else None
    except (OSError, ValueError, IndexError):
        return None


def owner_gone(pid: int, since: float) -> bool:
    """True when no process `pid` runs, or the one that does started after `since` (a reused pid)."""
    if pid == os.getpid():
        return False
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there: never guess
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # runs, as another user
        pass
    started = _started(pid)
    return started is not None and started > since + 1  # 1 s: /proc's boot time is whole seconds


def sweep_stale(parent: Path, prefix: str) -> list[Path]:
    """Remove `parent/<prefix><pid>[-...]` entries whose owner is gone; returns what was removed."""
    pattern = re.compile(rf"{re.escape(prefix)}(\d+)(?:-[^/]*)?")
    removed = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None:
            continue
        try:
            stale = owner_gone(int(match.group(1)), entry.lstat().st_mtime)
        except OSError:
            continue
        if stale:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def make_staging(parent: Path, prefix: str) -> Path:
    """A new `parent/<prefix><pid>-<random>` folder, after sweeping stale ones of the same prefix."""
    sweep_stale(parent, prefix)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent))


def owned_name(prefix: str) -> str:
    """`<prefix><pid>`: a name `sweep_stale(parent, prefix)` removes once this process is gone."""
    return f"{prefix}{os.getpid()}"


def lock_dir() -> Path:
    """Where writer locks live: one folder shared by every process of the machine, so a lock never adds
    a file to the user's folders. /tmp, not $TMPDIR: two shells (or batch jobs) with their own TMPDIR
    writing one run folder must still see each other's lock."""
    shared = Path("/tmp")
    base = shared if os.name == "posix" and os.access(shared, os.W_OK | os.X_OK) else Path(tempfile.gettempdir())
    return base / "superexperts-locks"


@contextlib.contextmanager
def writer_lock(target: str | os.PathLike, what: str = "--out") -> Iterator[None]:
    """Hold the one writer lock of `target` (a run or output folder, or a file) while the block runs.

    A second writer gets one UserError naming the first one's pid; a lock whose owner is gone
    (killed, or its pid reused by a younger process: `owner_gone`) is swept and taken.
    """
    from .errors import UserError

    real = os.path.realpath(os.path.expanduser(target))
    folder = lock_dir()
    folder.mkdir(mode=0o1777, exist_ok=True)
    path = folder / (hashlib.sha256(real.encode()).hexdigest()[:24] + ".lock")
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            try:
                pid = int(path.read_text().split()[0])
                stale = owner_gone(pid, path.stat().st_mtime)
            except (OSError, ValueError, IndexError):  # half-written by a writer killed at once
                pid, stale = None, True
            if not stale:
                raise UserError(f"{what} {target} is being written by another superexperts process (pid {pid}); "
                                "wait for it to finish or choose another path.") from None  # fmt: skip
            path.unlink(missing_ok=True)
    else:
        raise UserError(f"{what} {target}: could not take its writer lock {path}; retry.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()} {real}\n")
        yield
    finally:
        path.unlink(missing_ok=True)
