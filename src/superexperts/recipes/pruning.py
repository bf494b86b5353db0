"""The prune-eval recipe: a model + a request -> prune_eval.json (and the run report's section).

The request checks everything that needs no model when it is built; `run_prune_eval` loads the
model, resolves the experts, builds the conditions (original, pruned, random controls), measures
each on the same perplexity tokens, tasks and prompts, and writes the document atomically.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..capture.data import calibration, check_texts
from ..evaluate.ablate.ablation import check_mode
from ..evaluate.ablate.controls import check_controls_fit, check_planned_conditions
from ..evaluate.request import EvalFields
from ..identify.atom_pruning import SCOPES as ATOM_CRITERIA
from ..identify.atom_pruning import atom_pruning_plan, atom_scores, check_rho
from ..identify.pruning_criteria import check_prune_request, pruning_plan
from ..identify.run_model import check_run_model, result_basis
from ..models.atoms import Atom, super_atoms_of, validate_atoms
from ..models.config_file import check_atoms_in_config
from ..models.demo_data import DEMO_PPL
from ..models.experts import Expert, check_experts_in_config, experts_json, validate_experts
from ..models.fields import ModelFields
from ..models.options import check_prefetch
from ..runs.errors import UserError
from ..runs.runfolder import atomic_write_json, base_metadata, load_super_experts, outside_basis
from ..runs.safety import check_record_out

if TYPE_CHECKING:  # the request is checked before torch loads; the functions that measure import it
    import torch

    from ..capture.data import Calibration
    from ..models.loading import Loaded

FORMAT = "superexperts.prune_eval/1"
CAUSAL_SAMPLES = 4  # calibration windows for the causal check: a small batch is enough for an MA
CAUSAL_THRESHOLD = 0.5  # causal = at least half of the MA a candidate writes is still missing a layer later


def check_atoms_alone(atoms: bool, experts: bool) -> None:
    """--atoms prunes the atoms it lists and nothing else: an explicit --experts beside it would be ignored."""
    if atoms and experts:
        raise UserError("--atoms and --experts each give the pruned set (single atoms or whole experts); pass "
                        "one of them.")  # fmt: skip


@dataclass
class PruneEvalRequest(EvalFields, ModelFields):  # + ppl, data, max_windows, tasks, prompts, ...; device, dtype, ...
    """What `superexperts prune-eval` was asked; `check()` runs everything that needs no model."""

    model: str | None  # None = the built-in demo
    experts: list[Expert] | None  # None: profile the model and take the paper rule's SEs
    experts_source: str  # custom | profiled | <run>/super_experts.json | none (--atoms: no expert is pruned)
    out: str | os.PathLike
    # Required here (the CLI fills the defaults); keyword-only, as EvalFields declares them.
    seq_len: int = field(kw_only=True)  # perplexity and calibration window length
    samples: int = field(kw_only=True)  # calibration windows (profiling, mean outputs, causal check)
    from_dir: str | None = None  # a profile run folder (its expert table picks causal candidates)
    mode: str = "zero"
    n_random: int = 0
    layer_controlled: bool = False
    seed: int = 0
    causal: int | None = None  # confirm the pruned experts + this many top other candidates
    overwrite: bool = False
    many: bool = False  # --many: run more than MAX_CONDITIONS conditions
    criterion: str | None = None  # prune the lowest `fraction` per layer by it (pruning_criteria)
    fraction: float | None = None
    protect: str = "super"  # super: also evaluate the criterion with `experts` protected (atoms: super-atoms too)
    atoms: list[Atom] | None = None  # --atoms: zero these atoms instead of experts (issue 20)
    atoms_source: str = "custom"  # custom | super (the --from run's super atoms)
    rho: float = 0.9  # CAMERA's weight of the max term (--prune-by camera)
    stream: bool = False  # perplexity read from the checkpoint one decoder layer at a time
    prefetch: str | None = None  # --prefetch auto|on|off with --stream (None: not given = auto)

    def __post_init__(self) -> None:
        self.check()

    @property
    def on_atoms(self) -> bool:
        """Atoms are pruned (--atoms or an atom criterion), not experts."""
        return self.atoms is not None or self.criterion in ATOM_CRITERIA

    def check(self) -> None:
        check_prune_request(self.criterion, self.fraction, self.protect, n_random=self.n_random,
                            has_table=self.from_dir is not None or self.experts_source != "custom",
                            has_run=self.from_dir is not None, atoms=self.atoms is not None)  # fmt: skip
        check_rho(self.rho)
        if self.on_atoms:
            self._check_atoms()
        check_mode(self.mode)
        self.check_ranges(random=self.n_random, causal=self.causal)
        check_planned_conditions(2 + self.n_random * (1 + self.layer_controlled), many=self.many)
        if self.layer_controlled and self.n_random < 1:
            raise UserError("--layer-controlled draws per seed: also pass --random N_SEEDS (e.g. --random 5).")
        if self.model is not None and self.ppl is None and not self.tasks and not self.prompts:
            raise UserError("nothing to measure: pass --ppl DATA (e.g. wikitext2), --tasks LIST or --generate PROMPTS.")
        self.check_model_fields()
        check_prefetch(self.prefetch, self.stream)
        if self.stream:
            self._check_stream()
        # Written beside the --from run's files (its default), never into the model or a data file.
        check_record_out(self.out, [self.model, self.ppl, self.data], "prune_eval.json", overwrite=self.overwrite)
        if self.ppl != DEMO_PPL:
            check_texts(self.ppl, "--ppl")
        check_texts(self.data)
        # Everything config.json can tell, before the weights are read (None: the built-in demo's copy;
        # a run of a changed copy of the demo is another model).
        config = self.checks_config(self.model)
        if self.from_dir is not None:
            check_run_model(self.from_dir, config, self.model)
        if self.experts is not None:
            check_experts_in_config(self.experts, config)
        if self.atoms is not None:
            check_atoms_in_config(self.atoms, config)
        if not self.on_atoms:  # --random past the disjoint control sets, from the config numbers
            for controlled in (False, True)[: 1 + self.layer_controlled]:
                check_controls_fit(config, self.experts, self.n_random, layer_controlled=controlled)

    def _check_atoms(self) -> None:
        """Atoms are zeroed in memory (the paper's pruning, one neuron at a time)."""
        check_atoms_alone(self.atoms is not None, self.experts is not None)
        for flag, given in (("--mode " + self.mode, self.mode != "zero"), ("--causal", self.causal is not None),
                            ("--stream", self.stream)):  # fmt: skip
            if given:
                raise UserError(f"{flag} works on whole experts; atoms (--atoms, --prune-by camera|heapr) are "
                                f"zeroed in memory: drop {flag.split()[0]}.")  # fmt: skip

    def _check_stream(self) -> None:
        """--stream measures perplexity only; everything else runs the whole model."""
        if self.model is None:
            raise UserError("--stream needs MODEL, a local checkpoint folder (the demo is small enough to load).")
        if self.device_map is not None:
            raise UserError("--stream and --device-map are two ways past memory; give one of them.")
        whole = [("--tasks", bool(self.tasks)), ("--generate", bool(self.prompts)),
                 ("--causal", self.causal is not None), ("--mode mean", self.mode == "mean"),
                 ("--experts super without --from (profiling now)", self.experts is None)]  # fmt: skip
        for flag, given in whole:
            if given:
                raise UserError(f"{flag} needs the whole model; drop --stream or use --device-map auto "
                                "(--stream measures perplexity only).")  # fmt: skip


def _metadata(req: PruneEvalRequest, loaded: Loaded, ppl: dict | None, calib: Calibration | None,
              experts: list[Expert]) -> dict:
    # The request as it was recorded before the recipes layer (same keys in prune_eval.json).
    dropped = ("task_manager", "experts", "prompts", "out", "model", "device", "device_map", "dtype",
               "trust_remote_code", "overwrite", "allow_missing_weights")  # the device map is in model.device_map
    request = {k: v for k, v in asdict(req).items() if k not in dropped}
    return base_metadata(
        tool="prune-eval", seed=req.seed, model=loaded.describe(), experts_source=req.experts_source,
        pruned=[{"layer": layer, "expert": e} for layer, e in experts], request=request,
        data={"perplexity": ppl, "calibration": calib.describe() if calib is not None else None},
        prompts=req.prompts,
    )  # fmt: skip


def profiled_super_experts(model: torch.nn.Module, calib_ids: torch.Tensor, *, batch_size: int = 1,
                           progress: bool = False) -> tuple[list[Expert], Any]:
    """The paper rule's SEs of `model` on `calib_ids` (for --experts super without --from), with
    the profile's expert table (for picking causal-check candidates)."""
    from ..capture.profile import profile
    from ..identify.rules import identify

    prof = profile(model, calib_ids, batch_size=batch_size, progress=progress)
    experts = identify(prof.expert_stats, prof.num_layers, "paper").experts
    if not experts:
        raise UserError("profiling found no Super Experts with the paper's rule; pass --experts LIST, "
                        "or `superexperts profile` with another --criterion and use --from RUN_DIR.")
    return experts, prof.expert_stats


def _experts_and_stats(req: PruneEvalRequest, loaded: Loaded, calib: Calibration | None, progress: bool):
    """(experts to prune, an expert table or None): given, read from --from, or profiled now."""
    if req.experts is None and req.atoms is not None:
        return [], None  # atoms given: nothing to profile
    if req.experts is None:
        return profiled_super_experts(loaded.model, calib.input_ids, batch_size=req.batch_size, progress=progress)
    from ..identify.profile_run import load_profile

    wanted = req.from_dir is not None and (req.causal or req.criterion)
    stats = load_profile(req.from_dir).expert_stats if wanted else None
    return req.experts, stats


def _causal(req: PruneEvalRequest, loaded: Loaded, calib: Calibration, experts: list[Expert], stats,
            progress: bool) -> dict:
    from ..evaluate.ablate.causal import confirm_candidates, default_candidates

    candidates = default_candidates(stats, experts, req.causal) if stats is not None else experts
    ids = calib.input_ids[:CAUSAL_SAMPLES]
    table = confirm_candidates(loaded.model, ids, candidates, threshold=CAUSAL_THRESHOLD,
                               batch_size=req.batch_size, progress=progress)  # fmt: skip
    return {"mode": "zero", "threshold": CAUSAL_THRESHOLD, "samples": int(ids.shape[0]),
            "measure": table.attrs["legacy"], "definition": table.attrs["definition"],
            "median": table.attrs["median"], "median_original": table.attrs["median_original"],
            "caveats": table.attrs["caveats"], "candidates": table.to_dict(orient="records")}  # fmt: skip


def _criterion_conditions(req: PruneEvalRequest, model_map, stats, experts: list[Expert], name: str):
    """original + the criterion's pruned set, unprotected and (--protect super) with `experts` kept."""
    from ..evaluate.ablate.conditions import Condition

    plan = pruning_plan(stats, req.criterion, req.fraction, experts if req.protect == "super" else [])
    conditions = [Condition("original", [], "none")]
    conditions += [Condition(n, validate_experts(model_map, chosen), req.mode) for n, chosen in plan.conditions(name)]
    return conditions, {"pruning": plan.to_json()}


def _atom_criterion_conditions(req: PruneEvalRequest, loaded: Loaded, model_map, experts: list[Expert],
                               calib: Calibration | None):  # fmt: skip
    """original + the atom criterion's zeroed atoms, unprotected and with --protect (super: the SEs' atoms,
    super-atoms: their super atoms); the plan says where each super atom ranks."""
    from ..evaluate.ablate.conditions import Condition
    from ..identify.profile_run import load_profile

    prof = load_profile(req.from_dir)
    scores = atom_scores(prof, req.criterion, rho=req.rho, model=loaded.model, batch_size=req.batch_size,
                         input_ids=calib.input_ids if calib is not None else None)  # fmt: skip
    super_atoms = super_atoms_of(load_super_experts(req.from_dir))
    plan = atom_pruning_plan(scores, req.fraction, criterion=req.criterion, protect=req.protect,
                             super_experts=experts, super_atoms=super_atoms)  # fmt: skip
    conditions = [Condition("original", [], "none")]
    conditions += [Condition(n, [], "zero", validate_atoms(model_map, chosen), listed=False)
                   for n, chosen in plan.conditions()]  # fmt: skip
    return conditions, {"atom_pruning": plan.to_json() | ({"rho": req.rho} if req.criterion == "camera" else {})}


def evaluate_pruning(loaded: Loaded, req: PruneEvalRequest, *, progress: bool = False) -> dict[str, Any]:
    """Every condition measured on a loaded model: the prune_eval.json document."""
    from ..evaluate.ablate.conditions import eval_plan, run_conditions
    from ..evaluate.ablate.mean import expert_mean_outputs
    from ..models.adapters import map_model

    model_map = map_model(loaded.model)
    if req.experts is not None:  # fail on a bad list before any long computation
        validate_experts(model_map, req.experts)
    batching = req.resolve_batch(loaded.model, seq_len=req.seq_len)
    if req.atoms is not None:
        validate_atoms(model_map, req.atoms)
    calib = None
    profiling = req.experts is None and req.atoms is None
    if profiling or req.mode == "mean" or req.causal is not None or req.criterion == "heapr":
        calib = calibration(req.data, loaded.tokenizer, seq_len=req.seq_len, samples=req.samples, seed=req.seed)
    experts, stats = _experts_and_stats(req, loaded, calib, progress)
    if req.criterion in ATOM_CRITERIA:
        conditions, pruning = _atom_criterion_conditions(req, loaded, model_map, experts, calib)
    else:
        conditions, pruning = _conditions(req, model_map, experts, stats)
    plan, ppl = eval_plan(req, loaded.tokenizer, req.seq_len)
    means = expert_mean_outputs(loaded.model, calib.input_ids, batch_size=req.batch_size) if req.mode == "mean" else None
    results = run_conditions(loaded.model, loaded.tokenizer, conditions, plan, means=means, progress=progress)
    document = _document(req, loaded, results, ppl, calib, experts, pruning) | {"batching": batching}
    if req.causal is not None:
        document["causal"] = _causal(req, loaded, calib, experts, stats, progress)
    return document


def _conditions(req: PruneEvalRequest, model_map, experts: list[Expert], stats):
    """(conditions, the document's --prune-by plan entry: {} without one)."""
    from ..evaluate.ablate.conditions import build_atom_conditions, build_conditions

    name = "custom" if req.experts_source == "custom" else "super"
    if req.criterion is not None:
        return _criterion_conditions(req, model_map, stats, experts, name)
    if req.atoms is not None:
        name = "super-atoms" if req.atoms_source == "super" else "atoms"
        return build_atom_conditions(model_map, req.atoms, name=name, n_random=req.n_random,
                                     layer_controlled=req.layer_controlled, seed=req.seed), {}  # fmt: skip
    return build_conditions(model_map, experts, name=name, mode=req.mode, n_random=req.n_random,
                            layer_controlled=req.layer_controlled, seed=req.seed), {}  # fmt: skip


def _document(req: PruneEvalRequest, loaded: Loaded, results: list[dict], ppl, calib, experts, pruning) -> dict:
    # With --prune-by or --atoms each condition lists its own pruned set; `pruning` names the protected ones.
    from ..evaluate.ablate.conditions import summarize

    pruned = [] if pruning or req.on_atoms else experts
    meta = _metadata(req, loaded, ppl, calib, pruned)
    # Replaced by the run's own basis when written into a profile run (run_prune_eval).
    basis = outside_basis(experts, meta["model"], req.from_dir)
    return {"format": FORMAT, "conditions": results, "summary": summarize(results), **meta, **pruning,
            "computed_for": basis}  # fmt: skip


def evaluate_pruning_streamed(req: PruneEvalRequest, *, progress: bool = False) -> dict[str, Any]:
    """The prune_eval.json document with each condition's perplexity streamed layer by layer from
    the checkpoint folder (stream.scoring.stream_perplexity: the in-memory numbers, one layer held)."""
    from ..evaluate.ablate.conditions import eval_plan
    from ..identify.profile_run import load_profile
    from ..models.adapters import map_model
    from ..models.checkpoints.skeleton import load_skeleton
    from ..scale.layerwise import prefetch_of, prefetch_used
    from ..scale.scoring import stream_perplexity

    loaded, device, dtype = load_skeleton(req.model, device=req.device, dtype=req.dtype,
                                          trust_remote_code=req.trust_remote_code)  # fmt: skip
    model_map = map_model(loaded.model)
    experts = validate_experts(model_map, req.experts)
    batching = req.resolve_batch(loaded.model, seq_len=req.seq_len, device=device)
    stats = load_profile(req.from_dir).expert_stats if req.from_dir is not None and req.criterion else None
    conditions, pruning = _conditions(req, model_map, experts, stats)
    plan, ppl = eval_plan(req, loaded.tokenizer, req.seq_len)
    results = []
    for cond in conditions:
        start = time.perf_counter()
        detail = stream_perplexity(loaded.path, plan.ppl_ids, experts=cond.experts or None, mode=cond.mode,
                                   seq_len=plan.seq_len, batch_size=plan.batch_size, max_windows=plan.max_windows,
                                   device=device, dtype=dtype, progress=progress, prefetch=prefetch_of(req.prefetch))  # fmt: skip
        # the same record as ablate.conditions.run_conditions, tasks and generations not measured
        results.append({"name": cond.name, "experts": experts_json(cond.experts), "mode": cond.mode,
                        "perplexity": detail["perplexity"], "perplexity_detail": detail, "tasks": {},
                        "generations": [], "seconds": round(time.perf_counter() - start, 3)})  # fmt: skip
    return _document(req, loaded, results, ppl, None, experts, pruning) | {
        "batching": batching, "prefetch": prefetch_used(prefetch_of(req.prefetch), device)}


def run_prune_eval(req: PruneEvalRequest, *, echo: Callable[[str], None] = lambda _: None,
                   progress: bool = False) -> dict[str, Any]:
    """Load the model, evaluate every condition, write `out`/prune_eval.json, refresh a run's report."""
    basis = result_basis(req.out, req.model)  # the SEs and profile the result rests on, read before the long part
    if req.stream:
        document = evaluate_pruning_streamed(req, progress=progress)
    else:
        from ..models.loading import warn_seq_len

        loaded = req.load(req.model)
        if not loaded.synthetic:
            warn_seq_len(loaded.model.config, req.seq_len)
        if loaded.synthetic:
            from ..models.demo import BANNER

            echo(BANNER)
        document = evaluate_pruning(loaded, req, progress=progress)
    if basis is not None:
        document["computed_for"] = basis
    atomic_write_json(Path(req.out) / "prune_eval.json", document)
    from ..report import refresh_run_report

    refresh_run_report(req.out)
    return document
