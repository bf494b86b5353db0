"""The run folder: one format, written atomically, read back without the model.

A run folder is either complete or untouched (`write_files` stages everything, then renames).
Layout:
    profile.json        {"format": FORMAT, "meta": {...}, "expert_stats": [...], "layer_stats": [...]}
    expert_stats.csv    the expert table, for pandas users (also .parquet)
    expert_stats.parquet
    atom_stats.parquet  one row per atom (intermediate unit) of every routed and shared expert
    super_experts.json  {"criterion": {...}, "super_experts": [{"layer", "expert", "max_abs_output",
                         "channel", "token": {...}}, ...]} sorted by max_abs_output desc
    prune_eval.json, sinks.json, report.html, ...   written by the other recipes into the same folder

Every file carries `base_metadata` (versions, seed, command): what reproduces a printed number.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UserError
from .safety import os_error_reason
from .staging import make_staging, usual_mode
from .version import __version__

if TYPE_CHECKING:
    import torch


# -- metadata --

_LIBS = ("torch", "transformers", "numpy", "pandas", "safetensors", "accelerate", "datasets", "lm_eval")


def library_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0], "superexperts": __version__, "platform": platform.platform()}
    for name in _LIBS:
        try:
            versions[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            continue
    return versions


def tensor_sha256(t: torch.Tensor) -> str:
    """Hash of a token tensor: identifies the exact calibration data of a run."""
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


# The command line of this process as the CLI received it (set by `cli.main`, which may be called
# with an argv of its own); None outside the CLI: then sys.argv, the script that called the library.
COMMAND_LINE: list[str] | None = None


def command_line() -> list[str]:
    return list(COMMAND_LINE) if COMMAND_LINE is not None else list(sys.argv)


def base_metadata(*, tool: str, seed: int | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "tool": "superexperts",
        "tool_version": __version__,
        "command": tool,
        "command_line": command_line(),
        "created_unix": round(time.time(), 3),
        "seed": seed,
        "versions": library_versions(),
        **extra,
    }


# -- atomic writes --

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
    """Write via a temp file in the same folder and rename: readers never see half a file.

    A failed write (full disk, read-only folder) is one UserError and leaves nothing behind; a
    device, pipe or link in the way is never replaced (the rename would swap the node itself)."""
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise UserError(f"{path} is a link, device or pipe, not a file this tool wrote; choose another path.")
    created = [p for p in [path.parent, *path.parent.parents] if not p.exists()]
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        usual_mode(Path(tmp))  # mkstemp makes 0600; the result gets what a plain open would
        os.replace(tmp, path)
        WRITTEN.append(path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        for folder in created:  # innermost first; only the empty folders this call made
            with contextlib.suppress(OSError):
                folder.rmdir()
        if isinstance(e, OSError):
            raise UserError(f"writing {path} failed ({os_error_reason(e)}); nothing was written.") from None
        raise


# Files this process has written (complete: atomic), so an interruption can say what already exists.
WRITTEN: list[Path] = []


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
                WRITTEN.append(out / name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as e:
        for folder in created:  # innermost first; only the empty folders this call made
            with contextlib.suppress(OSError):
                folder.rmdir()
        done = f"only {', '.join(moved)} were replaced" if moved else "nothing was written"
        raise UserError(f"writing {out} failed ({os_error_reason(e)}); {done}.") from None


@dataclass(frozen=True)
class RunFile:
    """One of our files in a run folder: its name, the files written with it (names or fnmatch
    patterns), the subcommand that writes it, and whether it was computed for the run's SE set
    (then it records `computed_for` and goes stale when the SEs change)."""

    name: str
    command: str
    companions: tuple[str, ...] = ()
    depends_on_ses: bool = False


# The one list of our file names: what an overwriting profile may remove (nothing else is touched),
# what the report checks for staleness and links to.
RUN_FILES = (
    RunFile("profile.json", "profile", ("expert_stats.csv", "expert_stats.parquet", "atom_stats.parquet")),
    RunFile("super_experts.json", "identify", ("sensitivity.json",)),
    RunFile("prune_eval.json", "prune-eval", depends_on_ses=True),
    RunFile("sinks.json", "sinks", ("sinks_router.csv", "sinks_chain.*", "sinks_d_sink.*", "sinks_maps.*"),
            depends_on_ses=True),
    RunFile("quant_eval.json", "quant-eval", depends_on_ses=True),
    RunFile("compare.json", "compare", ("compare_scatter.*",)),
    RunFile("report.html", "report", ("figures/*.png", "figures/*.svg")),
)  # fmt: skip
RUN_FILE_PATTERNS = tuple(pattern for f in RUN_FILES for pattern in (f.name, *f.companions))
RESULT_FILES = tuple(f for f in RUN_FILES if f.depends_on_ses)


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def se_labels(records: Iterable[Mapping[str, Any]]) -> list[str]:
    """'layer:expert' of super_experts.json records, in their order (largest first)."""
    return [f"{r['layer']}:{r['expert']}" for r in records]


def computed_for(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """What a result written into `run_dir` rests on: the run's SE set and a content hash of its
    profile.json; None when `run_dir` is not a profile run (a result written elsewhere)."""
    run = Path(run_dir)
    if not (run / RUN_MARKER).is_file() or not (run / "super_experts.json").is_file():
        return None
    return {"super_experts": se_labels(load_super_experts(run)), "profile_sha256": file_sha256(run / RUN_MARKER)}


MODEL_KEYS = ("model", "model_path", "revision", "fingerprint")  # of Loaded.describe(): which weights


def outside_basis(experts: Iterable[tuple[int, int | str]], model: Mapping[str, Any],
                  from_dir: str | os.PathLike | None) -> dict[str, Any]:  # fmt: skip
    """`computed_for` of a result written outside a profile run: the SE/expert set it was computed for
    (the --from run's SEs, else the experts it evaluated), the model (name, path, revision, weights
    fingerprint) and, with --from, that run and a hash of its profile.json. Such a result is never judged
    stale against its own folder; a profile run it is copied into marks it (`stale_reason`)."""
    run = computed_for(from_dir) if from_dir is not None else None
    return {"profile_run": os.path.abspath(from_dir) if run is not None else None,
            "profile_sha256": run["profile_sha256"] if run is not None else None,
            "super_experts": run["super_experts"] if run is not None else [f"{layer}:{e}" for layer, e in experts],
            "model": {k: model.get(k) for k in MODEL_KEYS}}  # fmt: skip


def _se_text(labels: list[str]) -> str:
    return ", ".join(labels) if labels else "none"


def _fingerprint_text(model: Mapping[str, Any]) -> str:
    parts = model.get("fingerprint") if isinstance(model.get("fingerprint"), Mapping) else {}
    named = ", ".join(f"{part} fingerprint {value}" for part, value in sorted(parts.items()))
    return f"{model.get('model_path') or 'an unrecorded model'}" + (f", {named}" if named else "")


def model_mismatch(run_dir: str | os.PathLike, document: Mapping[str, Any]) -> str | None:
    """Why `document` (a result file of `run_dir`) was computed on another model than the run profiled,
    e.g. copied in from another run folder; None when the models match or either is not recorded.
    Compared: the config and weights fingerprints both record (`computed_for.model`, profile.json meta)."""
    then = document.get("computed_for")
    model = then.get("model") if isinstance(then, Mapping) else None
    run = Path(run_dir)
    if not isinstance(model, Mapping) or not isinstance(model.get("fingerprint"), Mapping):
        return None
    try:
        meta = json.loads((run / RUN_MARKER).read_text()).get("meta")
    except (OSError, ValueError, AttributeError):
        return None  # no or a damaged profile.json: the report says so itself
    profiled = meta.get("fingerprint") if isinstance(meta, Mapping) else None
    if not isinstance(profiled, Mapping):
        return None
    differs = [p for p in ("config", "weights") if model["fingerprint"].get(p) and profiled.get(p)
               and model["fingerprint"][p] != profiled[p]]  # fmt: skip
    if not differs:
        return None
    return (f"computed on another model ({_fingerprint_text(model)}) than this run profiled "
            f"({_fingerprint_text(meta)}); its numbers are not this model's")  # fmt: skip


def stale_reason(run_dir: str | os.PathLike, document: Mapping[str, Any]) -> str | None:
    """Why `document` (a result file of `run_dir`) no longer matches the run, or None when it does.

    A document that records no `computed_for` (written before it was recorded) cannot be checked and
    is reported as such: the report never shows it as if it belonged to the run."""
    now = computed_for(run_dir)
    then = document.get("computed_for")
    if now is None:
        return None
    foreign = model_mismatch(run_dir, document)
    if foreign is not None:
        return foreign
    if not isinstance(then, Mapping):
        return f"it does not record which SEs it was computed for (the run's SEs now: {_se_text(now['super_experts'])})"
    if not then.get("profile_sha256"):  # written elsewhere and copied in: its experts were not this run's SEs
        return (f"it does not rest on a profile run (computed outside one, for experts "
                f"{_se_text(list(then.get('super_experts') or []))}; the run's SEs: {_se_text(now['super_experts'])})")
    if list(then.get("super_experts") or []) != now["super_experts"]:
        return f"computed for SEs {_se_text(list(then.get('super_experts') or []))}, now {_se_text(now['super_experts'])}"
    if then.get("profile_sha256") != now["profile_sha256"]:
        return f"computed for another profile.json (SEs {_se_text(now['super_experts'])} then and now)"
    return None


def rerun_command(document: Mapping[str, Any], run_dir: str | os.PathLike, command: str) -> str:
    """The command line that re-creates a result: the recorded one with --overwrite, else the plain form
    (also for a result of another model: its command line names that model or run)."""
    argv = document.get("command_line") if model_mismatch(run_dir, document) is None else None
    if isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv):
        argv = list(argv) if "--overwrite" in argv else [*argv, "--overwrite"]
        return shlex.join(argv)
    return f"superexperts {command} --from {shlex.quote(str(run_dir))} --overwrite"


def stale_results(run_dir: str | os.PathLike) -> list[tuple[str, str, str]]:
    """(file, reason, rerun command) of every result in `run_dir` that no longer matches its SEs."""
    out = []
    for f in RESULT_FILES:
        path = Path(run_dir) / f.name
        if not path.is_file():
            continue
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # a damaged file: the report's section says so
        reason = stale_reason(run_dir, document) if isinstance(document, dict) else None
        if reason is not None:
            out.append((f.name, reason, rerun_command(document, run_dir, f.command)))
    return out


def remove_stale_run_files(out_dir: str | os.PathLike, keep: Iterable[str]) -> list[str]:
    """Remove the files of an earlier run in `out_dir` (our names only) that are not in `keep`;
    an emptied figures/ folder goes too. Returns the names removed."""
    out = Path(out_dir)
    keep = set(keep)
    removed = []
    for pattern in RUN_FILE_PATTERNS:
        for path in sorted(out.glob(pattern)):
            name = path.relative_to(out).as_posix()
            if name not in keep and path.is_file() and not path.is_symlink():
                path.unlink()
                removed.append(name)
    with contextlib.suppress(OSError):  # only when empty: a user's file there keeps it
        (out / "figures").rmdir()
    return removed


def read_json(path: str | os.PathLike, what: str) -> Any:
    """Read a JSON file with a one-line error for missing or damaged files."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}; run `superexperts profile --out {path.parent}` first.")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is damaged or partial JSON ({e.msg if hasattr(e, 'msg') else e}); re-create it.")


def load_super_experts(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    data = read_json(Path(run_dir) / "super_experts.json", "super_experts.json")
    try:
        return list(data["super_experts"])
    except (KeyError, TypeError):
        raise UserError(f"{run_dir}/super_experts.json is damaged; re-run `superexperts identify --from {run_dir}`.")
