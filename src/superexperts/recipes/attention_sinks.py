"""The sinks recipe: attention sinks of a model before and after pruning its Super Experts.

Conditions: the original model, the SEs pruned layer by layer then all together, and random
controls of the same size. Writes sinks.json, sinks_router.csv and the figures (PNG + SVG).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..capture.data import calibration, check_texts
from ..evaluate.ablate.controls import check_controls_fit, check_planned_conditions, random_controls
from ..evaluate.sinks.validate import (
    check_attention_layers,
    check_heads,
    check_layers,
    config_sizes,
    default_map_layers,
)
from ..identify.run_model import check_run_model, result_basis
from ..models.experts import Expert, check_experts_in_config, resolve_experts, validate_experts
from ..models.fields import ModelFields
from ..models.options import check_prefetch
from ..runs.errors import UserError, check_at_least
from ..runs.runfolder import base_metadata, outside_basis, tensor_sha256, write_files
from ..runs.safety import check_record_out

if TYPE_CHECKING:  # the request is checked before torch loads; `run_sinks` imports the measuring code
    import torch

    from ..evaluate.sinks.study import SinkStudy


@dataclass
class SinksRequest(ModelFields):  # + device, device_map, dtype, trust_remote_code, allow_missing_weights
    model: str | None  # None = the built-in demo
    out: str | os.PathLike
    seq_len: int
    samples: int
    from_dir: str | None = None
    prune: str = "super"  # super | LIST | FILE
    n_random: int = 3
    layer_controlled: bool = False
    layers: list[int] | None = None  # attention-map layers (None: after the SEs, and the last)
    heads: list[int] = field(default_factory=lambda: [0])
    text: str | None = None  # measure on this text instead of data windows
    data: str | None = None
    top_k: int | None = None  # sink keys: None = the first token, K = the K most attended keys
    epsilon: float = 0.3
    seed: int = 0
    overwrite: bool = False
    many: bool = False  # --many: run more than MAX_CONDITIONS conditions
    stream: bool = False  # read the checkpoint one decoder layer at a time (no router view)
    prefetch: str | None = None  # --prefetch auto|on|off with --stream (None: not given = auto)

    def __post_init__(self) -> None:
        check_prefetch(self.prefetch, self.stream)
        if self.stream:
            self._check_stream()
        check_at_least("--random", self.n_random, 0)
        check_planned_conditions(2 + self.n_random, many=self.many)  # original, pruned, controls
        if not 0.0 < self.epsilon < 1.0:
            raise UserError(f"--epsilon must be in (0, 1), got {self.epsilon}.")
        if self.text is not None and not self.text.strip():
            raise UserError("--text is empty; pass a sentence (at least 2 tokens).")
        if self.prune == "super" and self.from_dir is None and self.model is not None:
            raise UserError("--experts super needs the SE list: pass --from RUN_DIR (a profile run of this model) "
                            "or list the experts, e.g. --experts 1:68,2:92.")
        self.check_model_fields()
        # Written beside the --from run's files (its default), never into the model or a data file.
        check_record_out(self.out, [self.model, self.data], "sinks.json", overwrite=self.overwrite)
        check_texts(self.data)
        # Everything config.json can tell, before the weights are read (None: the built-in demo's copy):
        # the run's model, the experts, --random past the disjoint control sets, --layers and --heads.
        config = self.checks_config(self.model)
        if self.from_dir is not None:
            check_run_model(self.from_dir, config, self.model)
        experts = self.experts()
        check_experts_in_config(experts, config)
        check_controls_fit(config, experts, self.n_random, layer_controlled=self.layer_controlled)
        sizes = config_sizes(config, loaded=False)  # None: a size left to transformers' defaults
        if sizes is not None:
            _check_sizes(sizes, self)

    def _check_stream(self) -> None:
        """--stream reads a local folder layer by layer; what needs the whole model is refused."""
        if self.model is None:
            raise UserError("--stream needs MODEL, a local checkpoint folder (the demo is small enough to load).")
        if not os.path.isdir(os.path.expanduser(self.model)):
            raise UserError(f"--stream reads a local checkpoint folder; {self.model} is not one (download it first).")
        if self.device_map is not None:
            raise UserError("--stream and --device-map are two ways past memory; give one of them.")
        if self.allow_missing_weights:
            raise UserError("--allow-missing-weights needs the whole model; drop --stream or use --device-map auto.")

    def experts(self) -> list[Expert]:
        """The experts to prune (not yet checked against a model); `super` without --from is the demo's."""
        experts, _ = resolve_experts(self.prune, self.from_dir, "--prune")
        if experts is None:  # only the demo reaches here (checked on construction)
            from ..models.demo import DEMO_SUPER_EXPERTS

            experts = list(DEMO_SUPER_EXPERTS)
        return experts


def input_ids(req: SinksRequest, tokenizer) -> tuple[torch.Tensor, dict]:
    """The measured tokens: --text, or seeded windows of --data (built-in text by default)."""
    if req.text is not None:
        ids = tokenizer(req.text, return_tensors="pt").input_ids
        if ids.shape[1] < 2:
            raise UserError(f"--text gives {ids.shape[1]} token(s); sink metrics need at least 2.")
        return ids, {"text": req.text}
    calib = calibration(req.data, tokenizer, seq_len=req.seq_len, samples=req.samples, seed=req.seed)
    return calib.input_ids, {"data": calib.spec, "sampling": calib.sampling}


def _check_sizes(sizes: tuple[int, int], req: SinksRequest) -> None:
    check_layers(sizes[0], req.layers or [])
    check_heads(sizes[1], req.heads)


def run_sinks(req: SinksRequest, *, echo: Callable[[str], None] = lambda _: None) -> SinkStudy:
    """Load the model, measure every condition, write sinks.json and its figures, refresh a run's report."""
    basis = result_basis(req.out, req.model)  # the SEs and profile the result rests on, read before the long part
    experts = req.experts()
    from ..evaluate.sinks.attention import attention_layers
    from ..evaluate.sinks.study import sinks_study, study_files
    from ..models.adapters import input_device, map_model
    from ..models.loading import warn_seq_len
    from ..scale.layerwise import prefetch_of, prefetch_used
    from ..scale.sinks import streamed_sinks_study

    if req.stream:  # the meta skeleton: weights are read one decoder layer at a time by stream.sinks
        from ..models.checkpoints.skeleton import load_skeleton

        loaded, device, dtype = load_skeleton(req.model, device=req.device, dtype=req.dtype,
                                              trust_remote_code=req.trust_remote_code)  # fmt: skip
    else:
        loaded = req.load(req.model)
    if not loaded.synthetic and req.text is None:  # windows of --seq-len are cut
        warn_seq_len(loaded.model.config, req.seq_len)
    model, model_map = loaded.model, map_model(loaded.model)
    _check_sizes(config_sizes(model.config), req)
    experts = validate_experts(model_map, experts)
    ids, source = input_ids(req, loaded.tokenizer)
    attention = None if req.stream else attention_layers(model, ids[:1].to(input_device(model)))
    if attention is not None and req.layers is not None:
        check_attention_layers(req.layers, attention)
    layers = req.layers if req.layers is not None else default_map_layers(model_map.num_layers, experts, attention)
    controls = random_controls(model_map, experts, req.n_random, layer_controlled=req.layer_controlled, seed=req.seed)
    named = {f"random-{req.seed + i}": c for i, c in enumerate(controls)}
    if loaded.synthetic:
        from ..models.demo import BANNER

        echo(BANNER)
    common = {"super_experts": experts, "controls": named, "map_layers": layers, "map_heads": req.heads,
              "tokens": loaded.tokenizer.convert_ids_to_tokens(ids[0]), "top_k": req.top_k, "epsilon": req.epsilon}
    if req.stream:
        study = streamed_sinks_study(loaded.path, ids, **common, device=device, dtype=dtype,
                                     trust_remote_code=req.trust_remote_code, prefetch=prefetch_of(req.prefetch))  # fmt: skip
    else:
        study = sinks_study(model, ids, **common, tokenizer=loaded.tokenizer)
    basis = basis or outside_basis(experts, loaded.describe(), req.from_dir)
    meta = base_metadata(tool="sinks", seed=req.seed, **loaded.describe(), input=source,
                         input_shape=list(ids.shape), data_sha256=tensor_sha256(ids),
                         random_controls="layer-controlled" if req.layer_controlled else "global", computed_for=basis,
                         **({"streamed": True, "prefetch": prefetch_used(prefetch_of(req.prefetch), device)} if req.stream else {}))  # fmt: skip
    write_files(req.out, study_files(study, meta))
    from ..report import refresh_run_report

    refresh_run_report(req.out)
    return study
