"""`superexperts quant-eval [MODEL]`: what keeping the Super Experts in full precision buys."""

from __future__ import annotations

import argparse

from ..runs.errors import UserError, check_choice
from .common import (
    add_device_map_arg,
    add_loading_flags,
    add_many_flag,
    add_task_flags,
    add_window_flags,
    model_of,
    out_dir,
    print_outside_run,
    progress,
    tasks_of,
)

HELP = "fake-quantize the experts (RTN) with and without protecting the Super Experts"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "quant-eval", help=HELP,
        description="Conditions: original, all (every expert quantized), protect-super (all but the SEs), "
        "protect-random-<seed> (all but as many random non-SEs), se-only. Each is measured on perplexity "
        "(--ppl), massive activation retention, the SEs' outputs, attention sinks (D_sink) and optionally "
        "lm-eval tasks and generations; writes quant_eval.json into --out"
        " and re-renders the folder's report.html (+ figures/) when it is a profile run.",
    )  # fmt: skip
    p.add_argument("model", nargs="?", metavar="MODEL", help="local checkpoint folder or hub id (default: the "
                   "model of --from, else the built-in demo)")  # fmt: skip
    p.add_argument("--from", dest="from_dir", metavar="RUN_DIR", help="a profile run folder: its SEs are protected "
                   "(default: profile the model now, paper rule)")  # fmt: skip
    p.add_argument("--bits", default="4", help="weight bits: 8, 4, 3 or 2 (default 4); with --scheme camera-q one "
                   "width per tier, highest first, e.g. 8,4,2")
    p.add_argument("--scheme", default="uniform", help="uniform (every quantized weight at --bits, default) | "
                   "camera-q (each routed atom at its CAMERA score tier's width, per MoE layer; needs atom "
                   "statistics in the profile)")  # fmt: skip
    p.add_argument("--bits-ratio", metavar="R1,R2,...", help="--scheme camera-q: share of each layer's atoms per "
                   "--bits width, e.g. 0.1,0.3,0.6")  # fmt: skip
    p.add_argument("--protect", default="super", help="super (default): the "
                   "protect-super condition keeps whole SEs; super-atoms: also keep only the SEs' super atoms' rows "
                   "and columns unquantized (needs --from)")  # fmt: skip
    p.add_argument("--rho", type=float, default=0.9, help="--scheme camera-q: CAMERA's weight of the max term "
                   "(default 0.9)")  # fmt: skip
    p.add_argument("--group-size", type=int, metavar="G", help="one scale per G input columns (default: one per "
                   "output channel)")  # fmt: skip
    p.add_argument("--act-bits", type=int, help="also quantize each token's down_proj input: 8 or 4 (default off)")
    p.add_argument("--random", type=int, default=0, metavar="N_SEEDS", help="random-protection control sets "
                   "(default 0)")  # fmt: skip
    add_many_flag(p)
    add_window_flags(p, samples_default="32; demo 16: fewer than profile's 128 because "
                     "every condition re-profiles them")
    add_task_flags(p)
    add_loading_flags(p)
    add_device_map_arg(p)
    p.add_argument("--out", metavar="DIR", help="folder for quant_eval.json (default: --from RUN_DIR, else "
                   "runs/quant-eval)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace an existing quant_eval.json")
    p.set_defaults(run=run)


def _request(args: argparse.Namespace):
    from ..compress.quant import Scheme
    from ..models.experts import resolve_experts
    from ..recipes.quantizing import QuantEvalRequest
    from .prune_eval import read_prompts

    check_choice("--protect", args.protect, ("super", "super-atoms"))
    bits, ratios = _numbers(args.bits, int, "--bits"), _numbers(args.bits_ratio, float, "--bits-ratio")
    if args.scheme != "camera-q" and len(bits) != 1:
        raise UserError(f"--bits {args.bits}: one width, or one per tier with --scheme camera-q.")
    scheme = Scheme(bits=max(bits), group_size=args.group_size, act_bits=args.act_bits)
    scheme.check()
    experts, source = resolve_experts("super", args.from_dir)
    model = model_of(args, args.from_dir)
    if args.from_dir is not None:  # the run's SEs belong to this model (None: the built-in demo)
        from ..identify.profile_run import check_run_of

        check_run_of(args.from_dir, model, args.trust_remote_code)
    req = QuantEvalRequest(
        model=model, scheme=scheme, experts=experts, experts_source=source,
        n_random=args.random, seed=args.seed, many=args.many, ppl=args.ppl,
        seq_len=args.seq_len, max_windows=args.max_windows, data=args.data, samples=args.samples,
        batch_size=args.batch_size, limit=args.limit, num_fewshot=args.num_fewshot,
        prompts=read_prompts(args.generate), max_new_tokens=args.max_new_tokens, device=args.device,
        device_map=args.device_map, dtype=args.dtype, trust_remote_code=args.trust_remote_code,
        from_dir=args.from_dir, protect_atoms=args.protect == "super-atoms", mixed=args.scheme,
        tier_bits=bits if args.scheme == "camera-q" else [], tier_ratios=ratios, rho=args.rho,
    )  # fmt: skip
    req.check()
    req.tasks, req.task_manager = tasks_of(args)
    return req


def _numbers(text: str | None, kind: type, flag: str) -> list:
    """'8,4,2' -> [8, 4, 2]; None -> []."""
    if text is None:
        return []
    try:
        return [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"{flag} {text!r}: expected numbers separated by commas, e.g. 8,4,2.") from None


def run(args: argparse.Namespace) -> int:
    from ..compress.quant_eval import format_quant_table
    from ..recipes.quantizing import run_quant_eval

    req = _request(args)
    out = out_dir(args, "quant_eval.json", "runs/quant-eval", inputs=[req.model, args.data, args.ppl])
    document = run_quant_eval(req, out, echo=print, progress=progress(args))
    print(f"scheme: {req.scheme.label()} (RTN, symmetric; {document['scheme']['library']})")
    print(format_quant_table(document))
    print(f"wrote {out}/quant_eval.json")
    print_outside_run(out, "quant_eval.json")
    return 0
