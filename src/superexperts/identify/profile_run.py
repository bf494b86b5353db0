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
from ..runs.errors import UserError
from ..runs.runfolder import json_bytes, read_json, write_files
from .atoms import super_atoms_json
from .rules import Verdict, expert_label

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
