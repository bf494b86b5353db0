"""Which model a profile run folder belongs to, read from its metadata with json: the model to load
when none is given (`model_of_run`, `recorded_model`), the refusal of a run made on another model
(`check_run_model`), and what a result written into a run rests on (`result_basis`). Answered before
torch loads for a local checkpoint (its config.json read with json).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..models.config_file import checkpoint_path, config_layers, experts_per_layer
from ..models.demo_data import DEMO_SPEC
from ..models.fields import checks_config
from ..runs.errors import UserError
from ..runs.runfolder import RUN_MARKER, computed_for, read_json

# What a run of the built-in demo records as its model (a saved copy records its own path).
BUILTIN_DEMO_NAMES = (None, "builtin demo", DEMO_SPEC)


def run_meta(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The profile's meta a run folder carries: profile.json's, else the copy in super_experts.json
    (either may be alone); {} when it has none."""
    for name in (RUN_MARKER, "super_experts.json"):
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

    meta = run_meta(run_dir)
    now = model_identity(checkpoint_path(model))
    target = {"model type": getattr(config, "model_type", None), "layers": config_layers(config),
              "experts per layer": experts_per_layer(config), "revision": now["revision"]}  # fmt: skip
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
    check_run_model(run_dir, checks_config(checkpoint_path(model), trust_remote_code), model, flag)


def result_basis(out_dir: str | os.PathLike, model: str | None) -> dict[str, Any] | None:
    """What a result written into `out_dir` rests on (runs.runfolder.computed_for: the run's SEs and
    profile) and the model it is computed on (None: the built-in demo), so that the report can tell a
    result of another model, e.g. copied in from another run folder (runfolder.model_mismatch)."""
    from ..models.identity import model_identity

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


def model_of_run(run_dir: str | os.PathLike) -> str | None:
    """The model a profile run folder was made from (None = the built-in demo); reads only its metadata.
    A saved copy of the demo is synthetic too but is its own folder (perhaps with planted changes):
    only a run of the demo itself, by no MODEL or by name, means the built-in one."""
    data = read_json(Path(run_dir) / RUN_MARKER, "profile")  # a run folder without profile.json: one line
    meta = data.get("meta") if isinstance(data, dict) else None
    return recorded_model(meta if isinstance(meta, dict) else run_meta(run_dir), run_dir)
