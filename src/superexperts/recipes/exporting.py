"""The export recipe: a checkpoint folder + experts -> a pruned checkpoint folder (no model loaded)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..models.checkpoints.export_target import check_export_target
from ..models.config_file import local_config
from ..models.experts import Expert, check_experts_in_config, resolve_experts
from ..runs.errors import UserError


@dataclass(frozen=True)
class ExportRequest:
    model: str | os.PathLike  # a local checkpoint folder
    prune: str  # super | LIST | FILE
    out: str | os.PathLike
    from_dir: str | None = None
    mode: str = "zero"
    overwrite: bool = False
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        """What needs no weights, before torch loads: the experts (and the run they come from)
        against config.json, the mode, the source folder and --out."""
        experts = self.experts()
        check_export_target(self.model, self.out, mode=self.mode, overwrite=self.overwrite, inputs=self.inputs())
        config = local_config(self.model)
        if config is not None:  # none: the export's own reader says what is wrong with the checkpoint
            check_experts_in_config(experts, config)

    def inputs(self) -> list[str | None]:
        """What --out must not be or hold (besides the model)."""
        return [self.from_dir, self.prune]

    def experts(self) -> list[Expert]:
        """The experts to zero; `super` takes the SEs of --from."""
        if self.prune == "super" and self.from_dir is None:
            raise UserError("--experts super needs --from RUN_DIR (a folder written by `superexperts profile`).")
        if self.prune != "super" and self.from_dir is not None:
            raise UserError("--from is only used with --experts super; drop it or use --experts super.")
        experts, _ = resolve_experts(self.prune, self.from_dir, "--experts")
        if self.from_dir is not None:  # a run of another model would name the wrong experts
            from ..identify.run_model import check_run_model

            model = os.fspath(self.model)
            config = local_config(model)
            if config is None:
                from ..models.loading import load_config

                config = load_config(model, self.trust_remote_code)
            check_run_model(self.from_dir, config, model)
        return experts


def run_export(req: ExportRequest) -> tuple[list[Expert], dict[str, Any]]:
    """(the experts zeroed, the export record written beside the checkpoint)."""
    from ..models.checkpoints.export import export_pruned

    experts = req.experts()
    record = export_pruned(req.model, experts, req.out, mode=req.mode, overwrite=req.overwrite,
                           trust_remote_code=req.trust_remote_code, inputs=req.inputs())  # fmt: skip
    return experts, record
