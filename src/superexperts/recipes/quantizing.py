"""The quant-eval recipe (`run_quant_eval`): a request -> quant_eval.json (and the run report's section).

The CLI builds a `QuantEvalRequest` (everything checkable is checked before the model loads) and
calls `run_quant_eval`, which loads the model, evaluates every condition and writes the document.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..capture.data import calibration, check_texts
from ..compress.quant.scheme import Scheme
from ..compress.quant.tiers import camera_q_bits, check_tiers
from ..evaluate.ablate.controls import check_controls_fit, check_planned_conditions
from ..evaluate.request import EvalFields
from ..identify.atom_pruning import atom_scores, check_rho
from ..identify.rules import paper_super_experts
from ..identify.run_model import result_basis
from ..models.atoms import super_atoms_of, validate_atoms
from ..models.demo_data import DEMO_PPL
from ..models.demo_data import DEMO_WINDOWS as DEMO_DEFAULTS
from ..models.experts import Expert, check_experts_in_config, experts_json
from ..models.fields import ModelFields
from ..runs.errors import UserError, check_choice
from ..runs.runfolder import atomic_write_json, base_metadata, load_super_experts, outside_basis

if TYPE_CHECKING:  # the request is checked before torch loads; `run_quant_eval` imports the measuring code
    from ..models.loading import Loaded

SCHEMES = ("uniform", "camera-q")
# Each condition re-profiles the calibration windows: fewer than profile's 128 by default.
MODEL_DEFAULTS = {"seq_len": 2048, "samples": 32}


@dataclass
class QuantEvalRequest(EvalFields, ModelFields):  # + ppl, seq_len, data (SE outputs, massive activations,
    # sinks), tasks, ...; device, dtype, trust_remote_code, ...
    model: str | None  # None = the built-in demo
    scheme: Scheme
    experts: list[Expert] | None  # the SEs; None: profile the model and take the paper rule's
    experts_source: str  # profiled | <run>/super_experts.json
    n_random: int = 0
    seed: int = 0
    from_dir: str | None = None  # the profile run (its super atoms, for protect_atoms)
    protect_atoms: bool = False  # --protect super-atoms: also quantize all but the super atoms' rows/columns
    mixed: str = "uniform"  # --scheme: uniform (scheme.bits everywhere) | camera-q (widths by CAMERA score tier)
    tier_bits: list[int] = field(default_factory=list)  # camera-q: --bits 8,4,2
    tier_ratios: list[float] = field(default_factory=list)  # camera-q: --bits-ratio 0.1,0.3,0.6
    rho: float = 0.9  # CAMERA's weight of the max term
    many: bool = False  # --many: run more than MAX_CONDITIONS conditions

    def check(self) -> None:
        """Argument checks that need no model."""
        self.scheme.check()
        self.check_ranges(random=self.n_random)
        check_planned_conditions(4 + self.n_random, many=self.many)  # original, all, protect-super, se-only
        self.check_model_fields()
        check_choice("--scheme", self.mixed, SCHEMES)
        check_rho(self.rho)
        if self.mixed == "camera-q":
            check_tiers(self.tier_bits, self.tier_ratios)
            if self.n_random:
                raise UserError("--random draws random protected experts for the uniform scheme; drop it with "
                                "--scheme camera-q.")  # fmt: skip
        elif self.tier_ratios:
            raise UserError("--bits-ratio shares the --bits widths of --scheme camera-q; pass --scheme camera-q or "
                            "drop --bits-ratio.")  # fmt: skip
        if (self.protect_atoms or self.mixed == "camera-q") and self.scheme.act_bits:
            raise UserError("--act-bits quantizes each token's whole down_proj input; atom widths (--protect "
                            "super-atoms, --scheme camera-q) go without it: drop --act-bits.")  # fmt: skip
        if self.protect_atoms and self.from_dir is None:
            raise UserError("--protect super-atoms keeps the super atoms of a profile run: pass --from RUN_DIR.")
        check_texts(self.data)  # local data of the wrong kind fails here, not after the model ran
        check_texts(self.ppl, "--ppl")


def _super_atoms(req: QuantEvalRequest, model_map) -> dict | None:
    """{SE: [atom, ...]} of the --from run (validated against the model) for --protect super-atoms."""
    if not req.protect_atoms:
        return None
    found = super_atoms_of(load_super_experts(req.from_dir))
    if not found:
        raise UserError(f"{req.from_dir}/super_experts.json has no super atoms; re-run `superexperts profile` "
                        "without --no-atoms (older runs lack them) or drop --protect super-atoms.")  # fmt: skip
    validate_atoms(model_map, [(layer, e, k) for (layer, e), ks in found.items() for k, _ in ks])
    return {x: [k for k, _ in ks] for x, ks in found.items()}


def _metadata(req: QuantEvalRequest, loaded: Loaded, ppl: dict | None, calib, ses: list[Expert],
              sink_windows: int) -> dict:  # fmt: skip
    # The request as recorded before it carried the model fields (those are in `model`).
    dropped = ("task_manager", "experts", "prompts", "scheme", "model", "device", "device_map", "dtype",
               "trust_remote_code", "allow_missing_weights")  # fmt: skip
    request = {k: v for k, v in asdict(req).items() if k not in dropped}
    return base_metadata(
        tool="quant-eval", seed=req.seed, model=loaded.describe(), experts_source=req.experts_source,
        super_experts=experts_json(ses), request=request, sink_windows=sink_windows,
        data={"perplexity": ppl, "calibration": calib.describe()}, prompts=req.prompts,
    )  # fmt: skip


def write_quant_eval(out_dir: str | os.PathLike, document: dict[str, Any]) -> Path:
    path = Path(out_dir) / "quant_eval.json"
    atomic_write_json(path, document)
    return path


def run_quant_eval(req: QuantEvalRequest, out_dir: str | os.PathLike, *, echo: Callable[[str], None] = lambda _: None,
                   progress: bool = False) -> dict[str, Any]:  # fmt: skip
    """Load the model, evaluate every condition, write `out_dir`/quant_eval.json, refresh the run's report."""
    req.check()
    basis = result_basis(out_dir, req.model)  # the SEs and profile the result rests on, read before the long part
    if req.experts is not None:  # before reading the weights (None model: the built-in demo's copy)
        config = req.checks_config(req.model)
        check_experts_in_config(req.experts, config)
        check_controls_fit(config, req.experts, req.n_random, layer_controlled=False)
    from ..capture.profile import profile
    from ..compress.quant import check_model
    from ..compress.quant_eval import (
        add_sinks,
        camera_q_conditions,
        quant_conditions,
        quant_eval_json,
        run_quant_conditions,
    )
    from ..evaluate.ablate.conditions import eval_plan
    from ..models.adapters import map_model

    loaded = req.load(req.model)
    if loaded.synthetic:
        from ..models.demo import BANNER

        echo(BANNER)
    defaults = DEMO_DEFAULTS if loaded.synthetic else MODEL_DEFAULTS
    seq_len = req.seq_len or defaults["seq_len"]
    model_map = map_model(loaded.model)
    batching = req.resolve_batch(loaded.model, seq_len=seq_len)
    check_model(model_map, req.scheme)  # fail on a bad scheme or list before any long computation
    if req.experts is not None:
        quant_conditions(model_map, req.experts, n_random=req.n_random, seed=req.seed)
    super_atoms = _super_atoms(req, model_map)
    calib = calibration(req.data, loaded.tokenizer, seq_len=seq_len, samples=req.samples or defaults["samples"],
                        seed=req.seed)  # fmt: skip
    reference = profile(loaded.model, calib.input_ids, batch_size=req.batch_size, progress=progress)
    ses = req.experts if req.experts is not None else paper_super_experts(reference)
    if req.mixed == "camera-q":
        widths = camera_q_bits(atom_scores(reference, "camera", rho=req.rho), req.tier_bits, req.tier_ratios)
        conditions = camera_q_conditions(model_map, widths, super_atoms)
    else:
        conditions = quant_conditions(model_map, ses, n_random=req.n_random, seed=req.seed, super_atoms=super_atoms,
                                      bits=req.scheme.bits)  # fmt: skip
    if req.ppl is None and loaded.synthetic:  # the demo measures perplexity on its held-out text
        req.ppl = DEMO_PPL
    plan, ppl = eval_plan(req, loaded.tokenizer, seq_len)
    results = run_quant_conditions(loaded.model, loaded.tokenizer, conditions, plan, req.scheme, calib.input_ids,
                                   reference, ses, batch_size=req.batch_size, progress=progress)  # fmt: skip
    windows = add_sinks(loaded.model, results, conditions, req.scheme, calib.input_ids)
    document = quant_eval_json(results, req.scheme, _metadata(req, loaded, ppl, calib, ses, windows))
    document |= {"batching": batching,
                 "computed_for": basis or outside_basis(ses, loaded.describe(), req.from_dir)}  # fmt: skip
    if req.mixed == "camera-q":
        document["scheme"]["camera_q"] = {"bits": req.tier_bits, "ratios": req.tier_ratios, "rho": req.rho,
                                          "ranking": "per MoE layer, routed atoms; shared experts unquantized"}  # fmt: skip
    write_quant_eval(out_dir, document)
    from ..report import refresh_run_report

    refresh_run_report(out_dir)
    return document
