"""The `protect` recipe: a run folder (its SEs and the model it names) -> a protect list in one format.

Only the model's structure (a meta-device skeleton from config.json) and its checkpoint's key
list are read, never the weights. `superexperts protect MODEL` first profiles MODEL with the
`profile` recipe into a run folder, then reads that folder like any other.

>>> text = protect_run("runs/qwen3", ProtectRequest(fmt="llm-compressor"))
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..compress.protect import atom_entries, check_format, protected_entries, render
from ..identify.run_model import check_run_of, recorded_model, run_meta
from ..models.experts import experts_from_records, format_experts, validate_experts
from ..runs.errors import UserError
from ..runs.runfolder import RUN_MARKER, atomic_write, base_metadata, load_super_experts
from ..runs.safety import check_out_file


@dataclass
class ProtectRequest:
    fmt: str  # one of protect.FORMATS
    whole_layer: bool = False
    out: str | None = None  # None: the caller prints the text
    overwrite: bool = False
    checkpoint: str | None = None  # the model folder, when the run's recorded path is not here
    trust_remote_code: bool = False
    atoms: bool = False  # only the SEs' super atoms, as (module, channels): --for json
    inputs: tuple[str | None, ...] = ()  # other files the command reads (MODEL, --data): never the --out

    def check(self) -> None:
        """Everything checkable before a model config is read or a profile runs."""
        check_format(self.fmt)
        if self.atoms and self.fmt != "json":
            raise UserError(f"--atoms lists single channels, which only --for json carries; drop --atoms for {self.fmt}.")
        if self.atoms and self.whole_layer:
            raise UserError("--atoms keeps single channels and --whole-layer whole MoE layers; pass one of them.")
        if self.out is not None:  # never a run's own files, a device, a link or a file we did not write
            check_out_file(self.out, [self.checkpoint, *self.inputs], overwrite=self.overwrite, flag="--out-file")
        if self.checkpoint is not None and not Path(self.checkpoint).is_dir():
            raise UserError(f"--checkpoint {self.checkpoint} is not a folder; pass the model's checkpoint folder.")


def is_run_folder(source: str | os.PathLike) -> bool:
    return (Path(source) / RUN_MARKER).is_file()


def model_folder(meta: dict[str, Any], run_dir: str | os.PathLike = "RUN_DIR", trust_remote_code: bool = False) -> Path:
    """The checkpoint folder a run was profiled from: local, the demo, or config + index from the hub
    (a relative path of a run made before absolute paths is refused: `recorded_model`)."""
    spec = recorded_model(meta, run_dir, "RUN_DIR")
    if spec is None and meta.get("synthetic"):
        from ..models.demo import demo_checkpoint

        return demo_checkpoint()
    spec = spec or meta.get("name_or_path")
    if not spec:
        raise UserError("the run does not record its model; pass --checkpoint FOLDER.")
    if Path(os.path.expanduser(spec)).is_dir():
        return Path(os.path.expanduser(spec))
    try:  # a hub id: config, index and remote code only (a few kB), never the weights
        from huggingface_hub import snapshot_download

        folder = snapshot_download(spec, revision=meta.get("revision"), allow_patterns=["*.json", "*.py"])
    except Exception as e:  # noqa: BLE001 - offline, unknown id, gated repo: one line, the same fix
        raise UserError(f"the run's model {spec!r} is not a local folder and its config could not be fetched "
                        f"({type(e).__name__}); pass --checkpoint FOLDER.") from None  # fmt: skip
    return Path(folder)


def protect_run(run_dir: str | os.PathLike, req: ProtectRequest) -> str:
    """The protect list of `run_dir`'s Super Experts, as text in `req.fmt`."""
    req.check()
    records = load_super_experts(run_dir)
    ses = experts_from_records(records, f"{run_dir}/super_experts.json")
    if not ses:
        raise UserError(f"{run_dir}/super_experts.json lists no Super Experts: nothing to protect "
                        f"(try `superexperts identify --from {run_dir} --criterion ...`).")  # fmt: skip
    meta = run_meta(run_dir)
    folder = Path(req.checkpoint) if req.checkpoint else model_folder(meta, run_dir, req.trust_remote_code)
    # the names must come from the model the run profiled (a changed copy of the demo is another model)
    check_run_of(run_dir, str(folder), req.trust_remote_code, "--checkpoint" if req.checkpoint else "RUN_DIR")
    # The model's structure (torch, transformers): after every check that needs no model.
    from ..compress.names import checkpoint_keys, expert_modules
    from ..models.adapters import map_model
    from ..models.atoms import super_atoms_of, validate_atoms
    from ..models.checkpoints.skeleton import build_skeleton

    skeleton, _ = build_skeleton(folder, None, trust_remote_code=req.trust_remote_code, allow_quantized=True)
    model_map = map_model(skeleton)
    ses = validate_experts(model_map, ses)
    keys = checkpoint_keys(folder)
    names = expert_modules(skeleton, model_map, keys)
    if req.atoms:
        super_atoms = super_atoms_of(records)
        if not super_atoms:
            raise UserError(f"{run_dir}/super_experts.json has no super atoms; re-run `superexperts profile` without "
                            "--no-atoms (older runs lack them) or drop --atoms.")  # fmt: skip
        validate_atoms(model_map, [(layer, e, k) for (layer, e), ks in super_atoms.items() for k, _ in ks])
        entries = atom_entries(super_atoms, names)
    else:
        entries = protected_entries(ses, names, whole_layer=req.whole_layer)
    provenance = base_metadata(tool="protect", run=str(run_dir), model=meta.get("model") or str(folder),
                               super_experts=format_experts(ses), checkpoint_keys=keys is not None)  # fmt: skip
    return render(req.fmt, entries, whole_layer=req.whole_layer, meta=provenance)


def write_protect(text: str, req: ProtectRequest) -> None:
    """Write `text` to `req.out` atomically (checked again: a profile may have run in between)."""
    req.check()
    atomic_write(req.out, text)
