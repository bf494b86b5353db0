"""The profile recipe: model + calibration data -> run folder (tables, verdict, sensitivity, report).

The request and its checks import nothing heavy (a refusal answers before torch loads); the
functions that run the model import what they use.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..capture.batching import AUTO
from ..capture.data import calibration, check_texts, check_window_args
from ..identify.rules import check_criterion, get_criterion
from ..models.config_file import config_layers
from ..models.fields import ModelFields
from ..models.options import check_prefetch
from ..runs.errors import UserError
from ..runs.runfolder import RUN_MARKER, base_metadata, remove_stale_run_files, write_files
from ..runs.safety import check_out_path

if TYPE_CHECKING:
    from ..capture.data import Calibration
    from ..capture.profile import Profile
    from ..identify.identification import Identification
    from ..models.loading import Loaded


@dataclass
class ProfileRequest(ModelFields):  # + device, device_map, dtype, trust_remote_code, allow_missing_weights
    """What `superexperts profile` was asked; validated on construction (no model needed)."""

    model: str | None  # local folder or hub id; None = the built-in demo
    out: str | os.PathLike
    seq_len: int
    samples: int
    data: str | None = None  # None = the built-in text
    batch_size: int | str = "auto"  # windows per forward, or auto (batching.py)
    seed: int = 0
    overwrite: bool = False
    criterion: str = "paper"
    params: dict[str, Any] = field(default_factory=dict)
    report: bool = True
    stream: bool = False  # read the checkpoint one decoder layer at a time
    state_dir: str | None = None
    resume: bool = False
    prefetch: str | None = None  # --prefetch auto|on|off with --stream (None: not given = auto)
    out_flag: str = "--out"  # the flag that named `out` (protect profiles into --profile-out)
    atoms: bool = True  # per-atom statistics (atom_stats, super atoms); False: --no-atoms

    def __post_init__(self) -> None:
        check_window_args(self.seq_len, self.samples, 1 if self.batch_size == AUTO else self.batch_size)
        self.check_model_fields()
        get_criterion(self.criterion)
        # --overwrite replaces only an earlier run (profile.json) or an empty folder, never an input
        check_out_path(self.out, [self.model, self.data], RUN_MARKER, overwrite=self.overwrite, flag=self.out_flag)
        if not self.stream and (self.resume or self.state_dir):
            raise UserError("--state-dir/--resume only apply with --stream; add --stream.")
        check_prefetch(self.prefetch, self.stream)
        if self.stream and self.device_map is not None:
            raise UserError("--stream and --device-map are two ways past memory; give one of them.")
        if self.stream and self.model is None:
            raise UserError("--stream needs MODEL, a local checkpoint folder (the demo is small enough to load).")
        if self.resume and not self.state_dir:
            raise UserError("--resume needs --state-dir, the folder an earlier --stream run saved its progress in.")
        check_texts(self.data)
        config = self.checks_config(self.model)  # None: the built-in demo's copy
        check_criterion(self.criterion, self.params, config_layers(config))


@dataclass
class ProfileResult:
    profile: Profile
    identification: Identification
    sensitivity_verdict: str
    out_dir: Path
    calibration: Calibration
    synthetic: bool


def write_profile_run(loaded: Loaded, calib: Calibration, out_dir: str | os.PathLike, *, batch_size: int | str = AUTO,
                      criterion: str = "paper", params: dict[str, Any] | None = None, progress: bool = False,
                      report: bool = True, profiler: Callable[..., Profile] | None = None, atoms: bool = True
                      ) -> tuple[Profile, Identification]:
    """Profile, identify, and write the run folder all-or-nothing (then the report).

    `profiler` replaces `superexperts.profile` (same signature), e.g. layer streaming. `atoms`: also the
    per-atom statistics (atom_stats.parquet, the SEs' super atoms).
    """
    from ..capture.profile import profile
    from ..identify.identification import identification
    from ..identify.profile_run import run_files

    prof = (profiler or profile)(loaded.model, calib.input_ids, batch_size=batch_size, tokenizer=loaded.tokenizer,
                                 progress=progress, atoms=atoms)
    prof.meta |= loaded.describe() | {"data": calib.describe()} | base_metadata(tool="profile", seed=calib.seed)
    ident = identification(prof, criterion, params, command="profile")
    files = run_files(prof, ident.verdict) | ident.files
    write_files(out_dir, files)
    # An overwritten run folder holds only the new run: an earlier model's prune-eval or sinks results
    # (and its report) would otherwise be shown beside it. Removed only after the new files are in.
    remove_stale_run_files(out_dir, keep=files)
    if report:
        from ..report import write_report

        write_report(out_dir)
    return prof, ident


def _load(req: ProfileRequest) -> tuple[Loaded, Callable[..., Profile] | None]:
    """(loaded, None) in memory, or (the meta skeleton, a streaming profiler) with --stream."""
    if not req.stream:
        return req.load(req.model), None
    from ..models.checkpoints.skeleton import load_skeleton
    from ..scale.distributed import init_from_env
    from ..scale.layerwise import prefetch_of, streaming_profiler

    init_from_env()
    loaded, device, dtype = load_skeleton(req.model, device=req.device, dtype=req.dtype,
                                          trust_remote_code=req.trust_remote_code)  # fmt: skip
    return loaded, streaming_profiler(loaded, device, dtype, state_dir=req.state_dir, resume=req.resume,
                                      prefetch=prefetch_of(req.prefetch))


def run_profile(req: ProfileRequest, *, echo: Callable[[str], None] = lambda _: None,
                progress: bool = False) -> ProfileResult | None:
    """Load, calibrate, profile, identify, write. None on a non-zero rank of a data-parallel stream."""
    from ..identify.sensitivity import sensitivity_verdict
    from ..models.loading import warn_seq_len
    from ..scale.distributed import rank_and_world

    loaded, profiler = _load(req)
    if not loaded.synthetic:
        warn_seq_len(loaded.model.config, req.seq_len)
    calib = calibration(req.data, loaded.tokenizer, seq_len=req.seq_len, samples=req.samples, seed=req.seed)
    if loaded.synthetic:
        from ..models.demo import BANNER

        echo(BANNER)
    echo(f"data: {calib.spec}: {calib.input_ids.shape[0]} x {calib.input_ids.shape[1]} tokens ({calib.sampling})")
    if profiler is not None and rank_and_world()[0] != 0:  # data-parallel streaming: rank 0 writes the run
        profiler(loaded.model, calib.input_ids, batch_size=req.batch_size, atoms=req.atoms)
        return None
    prof, ident = write_profile_run(loaded, calib, req.out, batch_size=req.batch_size, criterion=req.criterion,
                                    params=req.params, progress=progress, report=req.report, profiler=profiler,
                                    atoms=req.atoms)
    return ProfileResult(prof, ident, sensitivity_verdict(ident.grid), Path(req.out), calib, loaded.synthetic)
