"""`prune_eval_run`: a loaded model + a request -> prune_eval.json (and the run report's section).

The CLI builds a `PruneEvalRequest` (everything checkable is checked before the model loads),
loads the model, and calls `prune_eval_run`.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .ablate import Expert, confirm_candidates, default_candidates, expert_mean_outputs
from .data import calibration, token_stream
from .errors import UserError
from .io import RUN_MARKER
from .loading import EXPERT_COUNT_KEYS, Loaded
from .meta import base_metadata, tensor_sha256
from .models.adapters import map_model
from .prune_eval import (
    EvalPlan,
    build_conditions,
    profiled_super_experts,
    prune_eval_json,
    run_conditions,
    write_prune_eval,
)

# The demo runs on the built-in text (~1.3k tokens) and its held-out split: short windows.
DEMO_DEFAULTS = {"seq_len": 64, "samples": 16}
MODEL_DEFAULTS = {"seq_len": 2048, "samples": 128}
CAUSAL_SAMPLES = 4  # calibration windows for the causal check: a small batch is enough for an MA
CAUSAL_THRESHOLD = 0.5  # causal = the MA drops by at least half


@dataclass
class PruneEvalRequest:
    experts: list[Expert] | None  # None: profile the model and take the paper rule's SEs
    experts_source: str  # custom | profiled | <run>/super_experts.json
    from_dir: str | None = None  # a profile run folder (its expert table picks causal candidates)
    mode: str = "zero"
    n_random: int = 0
    layer_controlled: bool = False
    seed: int = 0
    ppl: str | None = None  # data spec; None with a real model = no perplexity
    seq_len: int | None = None  # None: 2048 (demo 64)
    max_windows: int | None = None
    data: str | None = None  # calibration data for profiling / mean outputs (None: built-in text)
    samples: int | None = None
    batch_size: int = 1
    tasks: list[str] = field(default_factory=list)
    task_manager: Any = None
    limit: int | None = None
    num_fewshot: int | None = None
    prompts: list[str] = field(default_factory=list)
    max_new_tokens: int = 64
    causal: int | None = None  # confirm the pruned experts + this many top other candidates

    def check(self, synthetic: bool | None = None) -> None:
        """Argument checks that need no model."""
        from .ablate import MODES
        from .errors import did_you_mean

        if self.mode not in MODES:
            raise UserError(f"--mode {self.mode!r} is unknown. {did_you_mean(self.mode, list(MODES))}"
                            f"Available: {', '.join(MODES)}.")  # fmt: skip
        for name, value, low in [("--random", self.n_random, 0), ("--seq-len", self.seq_len, 2),
                                 ("--batch-size", self.batch_size, 1), ("--max-new-tokens", self.max_new_tokens, 1),
                                 ("--samples", self.samples, 1), ("--max-windows", self.max_windows, 1),
                                 ("--causal", self.causal, 0)]:  # fmt: skip
            if value is not None and value < low:
                raise UserError(f"{name} must be >= {low}, got {value}.")
        if self.layer_controlled and self.n_random < 1:
            raise UserError("--layer-controlled draws per seed: also pass --random N_SEEDS (e.g. --random 5).")
        if synthetic is False and self.ppl is None and not self.tasks and not self.prompts:
            raise UserError("nothing to measure: pass --ppl DATA (e.g. wikitext2), --tasks LIST or --generate PROMPTS.")


def _plan(req: PruneEvalRequest, loaded: Loaded, seq_len: int) -> tuple[EvalPlan, dict[str, Any]]:
    if loaded.synthetic:  # the demo: held-out text, BOS-first windows as in profiling (its SEs fire on BOS)
        from .models.demo import heldout_path

        ppl_spec = req.ppl or str(heldout_path())
        ppl_ids = calibration(ppl_spec, loaded.tokenizer, seq_len=seq_len, samples=None).input_ids.reshape(-1)
    else:
        ppl_spec = req.ppl
        ppl_ids = token_stream(ppl_spec, loaded.tokenizer) if ppl_spec else None
    plan = EvalPlan(ppl_ids=ppl_ids, seq_len=seq_len, max_windows=req.max_windows, batch_size=req.batch_size,
                    tasks=req.tasks, task_manager=req.task_manager, limit=req.limit, num_fewshot=req.num_fewshot,
                    prompts=req.prompts, max_new_tokens=req.max_new_tokens)  # fmt: skip
    described = {"spec": ppl_spec, "tokens": int(ppl_ids.numel()), "sha256": tensor_sha256(ppl_ids),
                 "seq_len": seq_len, "max_windows": req.max_windows,
                 "windows": "BOS-first (demo)" if loaded.synthetic else "the token stream cut in seq_len windows",
                 } if ppl_ids is not None else None  # fmt: skip
    return plan, described


def _metadata(req: PruneEvalRequest, loaded: Loaded, ppl: dict | None, calib, experts: list[Expert]) -> dict:
    request = {k: v for k, v in asdict(req).items() if k not in ("task_manager", "experts", "prompts")}
    return base_metadata(
        tool="prune-eval", seed=req.seed, model=loaded.describe(), experts_source=req.experts_source,
        pruned=[{"layer": layer, "expert": e} for layer, e in experts], request=request,
        data={"perplexity": ppl, "calibration": calib.describe() if calib is not None else None},
        prompts=req.prompts,
    )  # fmt: skip


def _experts_and_stats(req: PruneEvalRequest, loaded: Loaded, calib, progress: bool):
    """(experts to prune, an expert table or None): given, read from --from, or profiled now."""
    if req.experts is None:
        return profiled_super_experts(loaded.model, calib.input_ids, batch_size=req.batch_size, progress=progress)
    stats = None
    if req.from_dir is not None and req.causal:
        from .run import load_profile

        stats = load_profile(req.from_dir).expert_stats
    return req.experts, stats


def _causal(req: PruneEvalRequest, loaded: Loaded, calib, experts: list[Expert], stats, progress: bool) -> dict:
    candidates = default_candidates(stats, experts, req.causal) if stats is not None else experts
    ids = calib.input_ids[:CAUSAL_SAMPLES]
    table = confirm_candidates(loaded.model, ids, candidates, threshold=CAUSAL_THRESHOLD,
                               batch_size=req.batch_size, progress=progress)  # fmt: skip
    return {"mode": "zero", "threshold": CAUSAL_THRESHOLD, "samples": int(ids.shape[0]),
            "measure": "ma_drop = 1 - max|hidden| after the candidate's layer (ablated / original)",
            "candidates": table.to_dict(orient="records")}  # fmt: skip


def prune_eval_run(loaded: Loaded, req: PruneEvalRequest, out_dir: str | os.PathLike, *,
                   progress: bool = False) -> dict[str, Any]:
    """Evaluate every condition, write `out_dir`/prune_eval.json, refresh the run's report."""
    req.check(loaded.synthetic)
    defaults = DEMO_DEFAULTS if loaded.synthetic else MODEL_DEFAULTS
    seq_len = req.seq_len or defaults["seq_len"]
    model_map = map_model(loaded.model)
    if req.experts is not None:  # fail on a bad list before any long computation
        build_conditions(model_map, req.experts, mode=req.mode)
    calib = None
    if req.experts is None or req.mode == "mean" or req.causal is not None:
        calib = calibration(req.data, loaded.tokenizer, seq_len=seq_len, samples=req.samples or defaults["samples"],
                            seed=req.seed)  # fmt: skip
    experts, stats = _experts_and_stats(req, loaded, calib, progress)
    name = "custom" if req.experts_source == "custom" else "super"
    conditions = build_conditions(model_map, experts, name=name, mode=req.mode, n_random=req.n_random,
                                  layer_controlled=req.layer_controlled, seed=req.seed)  # fmt: skip
    plan, ppl = _plan(req, loaded, seq_len)
    means = expert_mean_outputs(loaded.model, calib.input_ids, batch_size=req.batch_size) if req.mode == "mean" else None
    results = run_conditions(loaded.model, loaded.tokenizer, conditions, plan, means=means, progress=progress)
    document = prune_eval_json(results, _metadata(req, loaded, ppl, calib, experts))
    if req.causal is not None:
        document["causal"] = _causal(req, loaded, calib, experts, stats, progress)
    write_prune_eval(out_dir, document)
    if (Path(out_dir) / RUN_MARKER).is_file():  # a profile run folder: add the section to its report
        from .report import write_report

        write_report(out_dir)
    return document


def model_of_run(run_dir: str | os.PathLike) -> str | None:
    """The model a profile run folder was made from (None = the built-in demo)."""
    from .run import load_profile

    meta = load_profile(run_dir).meta
    return None if meta.get("synthetic") else meta.get("model_path") or meta.get("model") or None


def check_experts_in_config(experts: list[Expert], config) -> None:
    """Range-check an expert list from the model config alone, before the weights are read.
    (Dense layers and shared experts need the model; `validate_experts` checks them after loading.)"""
    text = getattr(config, "text_config", None) or config
    layers = getattr(text, "num_hidden_layers", None)
    per_layer = next((getattr(text, k) for k in EXPERT_COUNT_KEYS if isinstance(getattr(text, k, None), int)), None)
    for layer, expert in experts:
        if isinstance(layers, int) and not 0 <= layer < layers:
            raise UserError(f"layer {layer} is out of range; the model has layers 0..{layers - 1}.")
        if isinstance(expert, int) and isinstance(per_layer, int) and not 0 <= expert < per_layer:
            raise UserError(f"expert {layer}:{expert} is out of range; the model has experts 0..{per_layer - 1}.")
