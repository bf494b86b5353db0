"""`superexperts prune-eval [MODEL]`: perplexity, tasks and generations with and without the SEs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..runs.errors import UserError
from .common import (
    add_batch_flag,
    add_deprecated,
    add_many_flag,
    add_model_args,
    add_prefetch_arg,
    add_task_flags,
    model_of,
    print_outside_run,
    progress,
    seed_arg,
    task_names,
    window_defaults,
)

HELP = "evaluate a model with its Super Experts (or any experts) ablated, against random controls"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "prune-eval", help=HELP,
        description="Conditions: original, super (or custom), random-<seed> and layer-controlled-<seed> "
        "(random non-SEs of the same count). Each is measured on perplexity (--ppl), lm-eval tasks (--tasks) "
        "and greedy generations with repetition metrics (--generate); writes prune_eval.json into --out"
        " and re-renders the folder's report.html (+ figures/) when it is a profile run.",
    )  # fmt: skip
    add_model_args(p, "local checkpoint folder or hub id (default: the model of --from, else the built-in demo)")
    p.add_argument("--experts", metavar="super|LIST|FILE",
                   help="experts to ablate: 'super' (from --from, else profiled now), a list such as "
                   "1:68,2:92,4:shared, or a file (JSON records or super_experts.json) (default super; not with "
                   "--atoms, which prunes atoms instead)")
    p.add_argument("--from", dest="from_dir", metavar="RUN_DIR", help="a profile run folder: its SEs are 'super'")
    p.add_argument("--mode", default="zero", help="zero (paper: routed, contributes nothing) | mean (output "
                   "replaced by its calibration mean) | skip (removed from routing) (default zero)")  # fmt: skip
    p.add_argument("--random", type=int, default=0, metavar="N_SEEDS", help="random non-SE control sets (default 0)")
    add_many_flag(p)
    p.add_argument("--layer-controlled", action="store_true",
                   help="also draw N_SEEDS controls inside the SEs' layers (paper v3)")
    p.add_argument("--seed", type=seed_arg, default=0, help="first seed of the controls and windows (default 0)")
    p.add_argument("--ppl", metavar="DATA", help="perplexity data: file, folder, wikitext2, c4 or a dataset "
                   "name (default: the demo's held-out text, in BOS-first windows, for the demo; none otherwise)")  # fmt: skip
    p.add_argument("--seq-len", type=int, help="perplexity/calibration window length (default 2048; demo 64)")
    p.add_argument("--max-windows", type=int, help="perplexity windows kept (default all; the reference's C4: 256)")
    add_task_flags(p)
    p.add_argument("--causal", type=int, nargs="?", const=5, metavar="TOP_N",
                   help="also ablate each pruned expert alone (+ the TOP_N next candidates of the run's profile, "
                   "default 5): per layer, the drop of the activation it writes and the loss change; causal = "
                   "it removes a massive activation at its own layer that the next layer still carries")
    p.add_argument("--data", help="calibration data for --experts super without --from and --mode mean "
                   "(default built-in text)")  # fmt: skip
    p.add_argument("--samples", type=int, help="calibration windows (default 128; demo 16)")
    add_batch_flag(p)
    p.add_argument("--prune-by", dest="criterion", metavar="CRITERION", help="prune by a one-pass pruning "
                   "criterion instead (not an SE rule: --criterion is the SE rule of profile and identify): "
                   "frequency | reap | ean (the lowest "
                   "--fraction of each MoE layer's experts, ranked from the --from run's expert table), or atoms "
                   "(single neurons of experts): camera (ranked per MoE layer) | heapr (ranked over the model)")
    add_deprecated(p, "--criterion", "--prune-by", "criterion")
    p.add_argument("--fraction", type=float, help="with --prune-by: share of each layer's experts (or of the "
                   "ranked atoms) pruned, e.g. 0.25")  # fmt: skip
    p.add_argument("--protect", default="super", help="with --prune-by: super (also evaluate it with the --experts "
                   "set kept, default) | none | super-atoms (atom criteria: keep only the SEs' super atoms)")
    p.add_argument("--atoms", metavar="super|LIST", help="zero these atoms instead of experts: 'super' (the super "
                   "atoms of --from's super_experts.json) or LAYER:EXPERT:ATOM triples such as 1:68:3,2:92:7; "
                   "--random N adds as many random atoms per seed")  # fmt: skip
    p.add_argument("--rho", type=float, default=0.9, help="--prune-by camera: weight of the max term in CAMERA's "
                   "score (1 - rho) * sum + rho * max (default 0.9, CAMERA's run script)")  # fmt: skip
    p.add_argument("--out", metavar="DIR", help="folder for prune_eval.json (default: --from RUN_DIR, else "
                   "runs/prune-eval)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace an existing prune_eval.json")
    p.add_argument("--stream", action="store_true", help="perplexity only, reading MODEL (a local checkpoint "
                   "folder) one decoder layer at a time: models larger than memory. Tasks, generations, "
                   "--causal and --mode mean need the whole model (use --device-map auto)")  # fmt: skip
    add_prefetch_arg(p)
    p.set_defaults(run=run)


def read_prompts(values: list[str]) -> list[str]:
    """Each value is a file of prompts (one per non-empty line) or a prompt itself."""
    from ..capture.data import read_text_file

    prompts = []
    for value in values:
        path = Path(value)
        if path.is_file():  # binary or non-UTF-8 files: one line naming the file (data.py)
            prompts += [line for line in read_text_file(path).splitlines() if line.strip()]
        elif path.suffix in (".txt", ".jsonl") or "/" in value:
            raise UserError(f"--generate {value}: no such prompts file; pass a file (one prompt per line) or a prompt.")
        else:
            prompts.append(value)
    if values and not prompts:
        raise UserError("--generate: the prompts file is empty; put one prompt per line.")
    return prompts


def request(args: argparse.Namespace):
    """The validated request (nothing loaded yet; lm-eval tasks are checked here too)."""
    from ..models.demo_data import DEMO_PPL
    from ..models.experts import resolve_experts
    from ..recipes.pruning import PruneEvalRequest, check_atoms_alone

    tasks = task_names(args)
    from ..models.atoms import resolve_atoms

    check_atoms_alone(args.atoms is not None, args.experts is not None)  # --experts super too, before reading files
    atoms, atoms_source = resolve_atoms(args.atoms, args.from_dir) if args.atoms is not None else (None, "custom")
    if atoms is not None:
        experts, source = None, "none"  # atoms are pruned, no expert
    else:
        experts, source = resolve_experts(args.experts or "super", args.from_dir, "--experts")
    model = model_of(args, args.from_dir)
    seq_len, samples = window_defaults(model is None, args.seq_len, args.samples)
    req = PruneEvalRequest(
        model=model, experts=experts, experts_source=source, out=args.out or args.from_dir or "runs/prune-eval",
        seq_len=seq_len, samples=samples, from_dir=args.from_dir, mode=args.mode, n_random=args.random,
        layer_controlled=args.layer_controlled, seed=args.seed, many=args.many,
        ppl=args.ppl if args.ppl is not None or model is not None else DEMO_PPL, max_windows=args.max_windows,
        data=args.data, batch_size=args.batch_size, tasks=tasks, limit=args.limit, num_fewshot=args.num_fewshot,
        prompts=read_prompts(args.generate), max_new_tokens=args.max_new_tokens, causal=args.causal,
        device=args.device, device_map=args.device_map, dtype=args.dtype, trust_remote_code=args.trust_remote_code,
        overwrite=args.overwrite, allow_missing_weights=args.allow_missing_weights,
        criterion=args.criterion, fraction=args.fraction, protect=args.protect, stream=args.stream,
        prefetch=args.prefetch, atoms=atoms, atoms_source=atoms_source, rho=args.rho,
    )  # fmt: skip
    if tasks:  # lm-eval missing or an unknown task: fail before the model loads
        from ..evaluate.lm_eval import check_tasks

        req.task_manager = check_tasks(tasks, include_path=args.tasks_include)
    return req


def run(args: argparse.Namespace) -> int:
    from ..recipes.pruning import run_prune_eval

    req = request(args)
    document = run_prune_eval(req, echo=print, progress=progress(args))
    print(format_table(document["conditions"]))
    summary = format_summary(document["summary"])
    if summary:
        print(summary)
    if "pruning" in document:
        from ..identify.pruning_criteria import format_plan

        print(format_plan(document["pruning"]))
    if "atom_pruning" in document:
        from ..identify.atom_pruning import format_atom_plan

        print(format_atom_plan(document["atom_pruning"]))
    if "causal" in document:
        print(format_causal(document["causal"]))
    print(f"wrote {req.out}/prune_eval.json")
    print_outside_run(req.out, "prune_eval.json")
    return 0


# -- console formatting --

def _fmt(value: Any, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def _first_metric(metrics: dict) -> Any:
    return next((v for k, v in metrics.items() if "stderr" not in k), None)


def format_table(results: list[dict[str, Any]]) -> str:
    """One console line per condition: experts, mode, perplexity, first metric of each task, loops."""
    from ..models.experts import format_experts

    tasks = sorted({t for r in results for t in r.get("tasks", {})})
    header = ["condition", "experts", "mode", "perplexity", *tasks, "loop_fraction"]
    rows = [header]
    for r in results:
        experts = format_experts([(e["layer"], e["expert"]) for e in r["experts"]]) or "-"
        if r.get("atoms_pruned"):
            experts = f"{r['atoms_pruned']} atoms"
        cells = [r["name"], experts if len(experts) <= 32 else experts[:29] + "...", r["mode"], _fmt(r["perplexity"], 6)]
        cells += [_fmt(_first_metric(r["tasks"].get(t, {}))) for t in tasks]
        cells.append(_fmt(r.get("generation_metrics", {}).get("loop_fraction")))
        rows.append(cells)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def format_summary(summary: dict[str, Any]) -> str:
    lines = []
    for group, s in summary.items():
        ppl = s.get("perplexity")
        if ppl:
            lines.append(f"{group} controls ({ppl['n']} seeds): perplexity {ppl['mean']:.4g} +- {ppl['std']:.2g} "
                         f"(min {ppl['min']:.4g}, max {ppl['max']:.4g})")  # fmt: skip
    return "\n".join(lines)


def format_causal(causal: dict[str, Any]) -> str:
    """The causal check as console lines, causal first: per candidate the channel it writes, that
    channel's peak at its own layer (original -> ablated), the causal layers and the reason."""
    from ..evaluate.ablate.causal import layer_span

    lines = [f"causal check (ablate one expert, {causal['samples']} windows): {causal.get('definition', '')}"]
    for r in causal["candidates"]:
        name = f"{r['layer']}:{r['expert']}"
        if r.get("channel") is None:
            lines.append(f"  {name:<10} not meaningful: {r.get('reason', 'no effect on these windows')}")
            continue
        layers = r.get("causal_layers") or []
        verdict = f"CAUSAL at layers {layer_span(layers)}" if layers else f"not causal: {r['reason']}"
        peak = f"{r['own_original']:.4g} -> {r['own_ablated']:.4g} at its layer (drop {r['own_drop']:.0%})"
        lines.append(f"  {name:<10} ch {r['channel']:<5} {peak}  loss {r['loss_delta']:+.4g}  {verdict}")
    lines += [f"  note: {note}" for note in causal.get("caveats", [])]
    return "\n".join(lines)
