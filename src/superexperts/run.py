"""A run folder on disk: profile.json (+ CSV/Parquet tables) and super_experts.json.

Layout (all written atomically by `save_run`):
    profile.json        {"format": FORMAT, "meta": {...}, "expert_stats": [...], "layer_stats": [...]}
    expert_stats.csv    the expert table, for pandas users (also .parquet)
    expert_stats.parquet
    super_experts.json  {"criterion": {...}, "super_experts": [{"layer", "expert", "max_abs_output",
                         "channel", "token": {...}}, ...]} sorted by max_abs_output desc
"""

from __future__ import annotations

import io as _io
import os
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import UserError
from .io import json_bytes, read_json, write_files
from .profile import EXPERT_COLUMNS, Profile
from .rules import Verdict, expert_label

FORMAT = "superexperts.profile/1"


def super_experts_json(verdict: Verdict) -> dict[str, Any]:
    experts = []
    for r in verdict.super_experts.itertuples():
        experts.append({
            "layer": int(r.layer), "expert": expert_label(r.kind, r.expert),
            "max_abs_output": float(r.max_abs_output), "max_output": float(r.max_output),
            "channel": int(r.channel),
            "token": {"sample": int(r.sample), "position": int(r.position), "id": int(r.token_id),
                      "text": r.token_text},
        })  # fmt: skip
    return {"criterion": verdict.criterion, "super_experts": experts}


def profile_json(prof: Profile) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "meta": prof.meta,
        "expert_stats": prof.expert_stats.to_dict(orient="records"),
        "layer_stats": prof.layer_stats.to_dict(orient="records"),
    }


def run_files(prof: Profile, verdict: Verdict) -> dict[str, Any]:
    """The files of a run, as bytes or writer functions (for `io.write_files`)."""
    csv = _io.StringIO()
    prof.expert_stats.to_csv(csv, index=False)
    return {
        "profile.json": json_bytes(profile_json(prof)),
        "super_experts.json": json_bytes(super_experts_json(verdict) | {"meta": prof.meta}),
        "expert_stats.csv": csv.getvalue().encode(),
        "expert_stats.parquet": lambda p: prof.expert_stats.to_parquet(p, index=False),
    }


def save_run(out_dir: str | os.PathLike, prof: Profile, verdict: Verdict, extra: dict[str, Any] | None = None) -> None:
    """Write a run folder all-or-nothing; `extra` adds files (name -> bytes or writer)."""
    write_files(out_dir, run_files(prof, verdict) | (extra or {}))


def load_profile(run_dir: str | os.PathLike) -> Profile:
    """Read a run folder's profile.json back into a Profile (no model needed)."""
    path = Path(run_dir) / "profile.json"
    data = read_json(path, "profile")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise UserError(f"{path} has format {found!r}, this tool reads {FORMAT!r}; re-run `superexperts profile`.")
    try:
        experts = pd.DataFrame(data["expert_stats"], columns=EXPERT_COLUMNS)
        layers = pd.DataFrame(data["layer_stats"])
        meta = dict(data["meta"])
        meta["num_layers"]  # noqa: B018 - required key
    except (KeyError, TypeError) as e:
        raise UserError(f"{path} is partial or damaged (missing {e}); re-run `superexperts profile`.")
    if experts.empty or experts["max_abs_output"].isna().any():
        raise UserError(f"{path} has no usable expert records; re-run `superexperts profile`.")
    return Profile(experts, layers, meta)


def load_super_experts(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    data = read_json(Path(run_dir) / "super_experts.json", "super_experts.json")
    try:
        return list(data["super_experts"])
    except (KeyError, TypeError):
        raise UserError(f"{run_dir}/super_experts.json is damaged; re-run `superexperts identify {run_dir}`.")
