"""A profile run's own files: profile.json, super_experts.json and the expert tables, read back
without the model, and the check that a run belongs to the model in use.

    profile.json        {"format": FORMAT, "meta": {...}, "expert_stats": [...], "layer_stats": [...]}
    expert_stats.csv    the expert table, for pandas users (also .parquet)
    atom_stats.parquet  the atom table (Profile.atom_stats), when the run recorded atoms
    super_experts.json  {"criterion": {...}, "super_experts": [{"layer", "expert", "max_abs_output",
                         "channel", "token": {...}, "super_atoms": [{"atom", "share"}, ...]}, ...]}
                         sorted by max_abs_output desc
"""

from __future__ import annotations

import io as _io
import os
from pathlib import Path
from typing import Any

from ..capture.profile import ATOM_COLUMNS, EXPERT_COLUMNS, Profile
from ..models.demo import DEMO_SPEC
from ..models.loading import EXPERT_COUNT_KEYS
from ..runs.errors import UserError
from ..runs.runfolder import RUN_MARKER, computed_for, json_bytes, read_json, write_files
from .atoms import super_atoms_json
from .rules import Verdict, expert_label

# What a run of the built-in demo records as its model (a saved copy records its own path).
BUILTIN_DEMO_NAMES = (None, "builtin demo", DEMO_SPEC)


def run_meta(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The profile's meta a run folder carries (super_experts.json or profile.json; either may be alone)."""
    for name in ("super_experts.json", RUN_MARKER):
        data = read_json(Path(run_dir) / name, name) if (Path(run_dir) / name).is_file() else None
        if isinstance(data, dict) and isinstance(data.get("meta"), dict):
            return data["meta"]
    return {}


def check_run_model(run_dir: str | os.PathLike, config, model: str | None, flag: str = "--from") -> None:
    """Refuse a run folder profiled from another model than `model` (None: the built-in demo), whose
    config is `config`: its experts would be pruned in the wrong model. Compared: model type, layer
    count, routed experts per layer, the hub snapshot commit when both are hub models, and the config
    and weights fingerprints (a copy in another folder has another path but the same fingerprint:
    paths alone are not compared). Demo runs too: a changed copy of the demo is another model."""
    from ..models.identity import describe_source, model_identity
    from ..models.loading import checkpoint_path

    meta = run_meta(run_dir)
    text = getattr(config, "text_config", None) or config
    now = model_identity(checkpoint_path(model))
    target = {
        "model type": getattr(config, "model_type", None),
        "layers": getattr(text, "num_hidden_layers", None),
        "experts per layer": next((getattr(text, k) for k in EXPERT_COUNT_KEYS if isinstance(getattr(text, k, None), int)),
                                  None),
        "revision": now["revision"],
    }
    recorded = {"model type": meta.get("model_type"), "layers": meta.get("num_layers"),
                "experts per layer": meta.get("num_experts"), "revision": meta.get("revision")}  # fmt: skip
    for part in ("config", "weights"):
        recorded[f"{part} fingerprint"] = (meta.get("fingerprint") or {}).get(part)
        target[f"{part} fingerprint"] = (now["fingerprint"] or {}).get(part)
    for what, value in recorded.items():
        if value is not None and target[what] is not None and value != target[what]:
            source = describe_source(meta) if meta.get("model_path") else meta.get("model") or "another model"
            if meta.get("synthetic") and meta.get("model") in BUILTIN_DEMO_NAMES:
                source = "the built-in demo"
            given = "the built-in demo" if model is None else model
            raise UserError(f"{flag} {run_dir} was profiled on {source} ({what} {value}), but {given} has {what} "
                            f"{target[what]} ({describe_source(now)}); profile {given} and use that run.")


def check_run_of(run_dir: str | os.PathLike, model: str | None, trust_remote_code: bool = False,
                 flag: str = "--from") -> None:  # fmt: skip
    """`check_run_model` reading `model`'s config (no weights) first; None is the built-in demo."""
    from ..models.loading import checkpoint_path, load_config

    check_run_model(run_dir, load_config(checkpoint_path(model), trust_remote_code), model, flag)


def result_basis(out_dir: str | os.PathLike, model: str | None) -> dict[str, Any] | None:
    """What a result written into `out_dir` rests on (runs.runfolder.computed_for: the run's SEs and
    profile) and the model it is computed on (None: the built-in demo), so that the report can tell a
    result of another model, e.g. copied in from another run folder (runfolder.model_mismatch)."""
    from ..models.identity import model_identity
    from ..models.loading import checkpoint_path

    basis = computed_for(out_dir)
    if basis is None:
        return None
    identity = model_identity(checkpoint_path(model))
    return basis | {"model": {"model_path": identity["model_path"], "fingerprint": identity["fingerprint"]}}


def recorded_model(meta: dict[str, Any], run_dir: str | os.PathLike, flag: str = "--from") -> str | None:
    """The model a run's meta names (its absolute path or hub id; None = the built-in demo).

    Runs made before absolute paths (no "fingerprint" in their meta) may record a folder relative to
    where they were made; read from here it could name other weights, so it is refused, never
    resolved against the current folder (issue 23). Their hub ids (a revision was recorded) still work."""
    if meta.get("synthetic") and meta.get("model") in BUILTIN_DEMO_NAMES:
        return None
    spec = meta.get("model_path") or meta.get("model") or None
    if spec and "fingerprint" not in meta and not os.path.isabs(spec) and not meta.get("revision"):
        raise UserError(f"{flag} {run_dir} predates absolute model paths: it records its model as {spec!r}, relative "
                        "to the folder it was made in (or a hub id: the two cannot be told apart); pass MODEL "
                        "explicitly (checked against the run) or re-profile the model.")  # fmt: skip
    return spec


FORMAT = "superexperts.profile/1"


ATOM_FILE = "atom_stats.parquet"


def super_experts_json(verdict: Verdict, atom_stats=None) -> dict[str, Any]:
    """The SE list; with the run's atom table each entry also names its super atoms (identify/atoms.py)."""
    experts = []
    atoms = super_atoms_json(verdict.super_experts, atom_stats)
    for r, picked in zip(verdict.super_experts.itertuples(), atoms):
        experts.append({
            "layer": int(r.layer), "expert": expert_label(r.kind, r.expert),
            "max_abs_output": float(r.max_abs_output), "max_output": float(r.max_output),
            "channel": int(r.channel),
            "token": {"sample": int(r.sample), "position": int(r.position), "id": int(r.token_id),
                      "text": r.token_text},
        } | ({} if picked is None else {"super_atoms": picked}))  # fmt: skip
    return {"criterion": verdict.criterion, "super_experts": experts}


def profile_json(prof: Profile) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "meta": prof.meta,
        "expert_stats": prof.expert_stats.to_dict(orient="records"),
        "layer_stats": prof.layer_stats.to_dict(orient="records"),
    }


def run_files(prof: Profile, verdict: Verdict) -> dict[str, Any]:
    """The files of a run, as bytes or writer functions (for `write_files`)."""
    csv = _io.StringIO()
    prof.expert_stats.to_csv(csv, index=False)
    files = {
        "profile.json": json_bytes(profile_json(prof)),
        "super_experts.json": json_bytes(super_experts_json(verdict, prof.atom_stats) | {"meta": prof.meta}),
        "expert_stats.csv": csv.getvalue().encode(),
        "expert_stats.parquet": lambda p: prof.expert_stats.to_parquet(p, index=False),
    }
    if not prof.atom_stats.empty:
        files[ATOM_FILE] = lambda p: prof.atom_stats.to_parquet(p, index=False)
    return files


def save_run(out_dir: str | os.PathLike, prof: Profile, verdict: Verdict, extra: dict[str, Any] | None = None) -> None:
    """Write a run folder all-or-nothing; `extra` adds files (name -> bytes or writer)."""
    write_files(out_dir, run_files(prof, verdict) | (extra or {}))


def load_profile(run_dir: str | os.PathLike) -> Profile:
    """Read a run folder's profile.json back into a Profile (no model needed)."""
    import pandas as pd

    path = Path(run_dir) / "profile.json"
    data = read_json(path, "profile")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise UserError(f"{path} has format {found!r}, this tool reads {FORMAT!r}; re-run `superexperts profile`.")
    try:
        experts = pd.DataFrame(data["expert_stats"], columns=EXPERT_COLUMNS)
        layers = pd.DataFrame(data["layer_stats"])
        meta = dict(data["meta"])
        meta["num_layers"]
    except (KeyError, TypeError) as e:
        raise UserError(f"{path} is partial or damaged (missing {e}); re-run `superexperts profile`.")
    for column in ("max_signed_output", "reap_saliency", "ean"):  # NaN is saved as "nan" (to_jsonable)
        experts[column] = pd.to_numeric(experts[column], errors="coerce")
    if experts.empty or experts["max_abs_output"].isna().any():
        raise UserError(f"{path} has no usable expert records; re-run `superexperts profile`.")
    return Profile(experts, layers, meta, load_atoms(Path(run_dir)))


def load_atoms(run_dir: Path):
    """The run's atom table, or an empty one when the run has none (runs made before atoms existed)."""
    import pandas as pd

    from ..capture.profile import empty_atom_table

    path = run_dir / ATOM_FILE
    if not path.is_file():
        return empty_atom_table()
    try:
        table = pd.read_parquet(path)
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is unreadable ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                        "re-run `superexperts profile`.") from None  # fmt: skip
    missing = [c for c in ATOM_COLUMNS if c not in table.columns]
    if missing:
        raise UserError(f"{path} lacks columns {missing}; re-run `superexperts profile`.")
    return table


def model_of_run(run_dir: str | os.PathLike) -> str | None:
    """The model a profile run folder was made from (None = the built-in demo); reads only its metadata.
    A saved copy of the demo is synthetic too but is its own folder (perhaps with planted changes):
    only a run of the demo itself, by no MODEL or by name, means the built-in one."""
    data = read_json(Path(run_dir) / "profile.json", "profile")
    meta = data.get("meta", {}) if isinstance(data, dict) else {}
    return recorded_model(meta if isinstance(meta, dict) else {}, run_dir)
