"""The export recipe: a checkpoint folder + experts -> a pruned checkpoint folder (no model loaded)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..models.experts import Expert, resolve_experts
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

    def experts(self) -> list[Expert]:
        """The experts to zero; `super` takes the SEs of --from."""
        if self.prune == "super" and self.from_dir is None:
            raise UserError("--experts super needs --from RUN_DIR (a folder written by `superexperts profile`).")
        if self.prune != "super" and self.from_dir is not None:
            raise UserError("--from is only used with --experts super; drop it or use --experts super.")
        experts, _ = resolve_experts(self.prune, self.from_dir, "--experts")
        if self.from_dir is not None:  # a run of another model would name the wrong experts
            from ..identify.profile_run import check_run_model
            from ..models.loading import load_config

            check_run_model(self.from_dir, load_config(os.fspath(self.model), self.trust_remote_code), str(self.model))
        return experts


def run_export(req: ExportRequest) -> tuple[list[Expert], dict[str, Any]]:
    """(the experts zeroed, the export record written beside the checkpoint)."""
    from ..models.checkpoints.export import export_pruned

    experts = req.experts()
    inputs = [req.from_dir, req.prune]  # --out must not be or hold any of them (nor the model)
    record = export_pruned(req.model, experts, req.out, mode=req.mode, overwrite=req.overwrite,
                           trust_remote_code=req.trust_remote_code, inputs=inputs)  # fmt: skip
    return experts, record
