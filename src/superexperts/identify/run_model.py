"""Which model a profile run folder belongs to, read from its metadata with json: the model to load
when none is given (`model_of_run`) and the refusal of a run made on another model (`check_run_model`),
answered before torch loads for a local checkpoint (its config.json read with json).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..models.config_file import config_layers, experts_per_layer
from ..models.demo_data import DEMO_SPEC
from ..models.fields import checks_config
from ..runs.errors import UserError
from ..runs.runfolder import RUN_MARKER, read_json


def check_run_model(run_dir: str | os.PathLike, config, model: str, flag: str = "--from") -> None:
    """Refuse a run folder profiled from another model than `model` (whose config is `config`):
    its experts would be pruned in the wrong model. Compared: model type, layer count, routed experts
    per layer, and the hub revision when both are known. (A checkpoint copied to another folder has
    another path but the same model: paths alone are not compared.)"""
    meta = {}
    for name in ("super_experts.json", RUN_MARKER):  # both carry the profile's meta; either may be alone
        data = read_json(Path(run_dir) / name, name) if (Path(run_dir) / name).is_file() else None
        if isinstance(data, dict) and isinstance(data.get("meta"), dict):
            meta = data["meta"]
            break
    target = {
        "model type": getattr(config, "model_type", None),
        "layers": config_layers(config),
        "experts per layer": experts_per_layer(config),
        "revision": getattr(config, "_commit_hash", None),
    }
    recorded = {"model type": meta.get("model_type"), "layers": meta.get("num_layers"),
                "experts per layer": meta.get("num_experts"), "revision": meta.get("revision")}  # fmt: skip
    if meta.get("synthetic"):
        recorded["revision"] = None
    elif isinstance(meta.get("fingerprint"), dict) and Path(model).is_dir():
        # the same architecture with other weights (another folder under the run's relative name)
        from ..models.checkpoints.folder import checkpoint_fingerprint

        now = checkpoint_fingerprint(Path(model)) or {}
        for part in ("weights", "config"):
            recorded[f"{part} fingerprint"] = meta["fingerprint"].get(part)
            target[f"{part} fingerprint"] = now.get(part)
    for what, value in recorded.items():
        if value is not None and target[what] is not None and value != target[what]:
            source = meta.get("model_path") or meta.get("model") or meta.get("name_or_path") or "another model"
            raise UserError(f"{flag} {run_dir} was profiled on {source} ({what} {value}), but {model} has "
                            f"{what} {target[what]}; profile {model} and use that run.")


def check_run_of(run_dir: str | os.PathLike, model: str, trust_remote_code: bool = False, flag: str = "--from") -> None:
    """`check_run_model` reading `model`'s config (no weights) first."""
    check_run_model(run_dir, checks_config(model, trust_remote_code), model, flag)


def run_meta(run_dir: str | os.PathLike) -> dict:
    """The metadata of a run's profile.json (json only, no tables); {} when it has none."""
    data = read_json(Path(run_dir) / RUN_MARKER, "profile")
    meta = data.get("meta", {}) if isinstance(data, dict) else {}
    return meta if isinstance(meta, dict) else {}


def model_of_run(run_dir: str | os.PathLike) -> str | None:
    """The model a profile run folder was made from (None = the built-in demo); reads only its metadata.
    A saved copy of the demo is synthetic too but is its own folder (perhaps with planted changes):
    only a run of the demo itself, by no MODEL or by name, means the built-in one."""
    meta = run_meta(run_dir)
    if meta.get("synthetic") and meta.get("model") in (None, "builtin demo", DEMO_SPEC):
        return None
    return meta.get("model_path") or meta.get("model") or None
