"""`superexperts sinks [MODEL]`: attention sinks before and after pruning the Super Experts."""

from __future__ import annotations

import argparse

from ..runs.errors import UserError
from .common import (
    add_experts_arg,
    add_many_flag,
    add_model_args,
    add_prefetch_arg,
    model_of,
    print_outside_run,
    seed_arg,
    window_defaults,
)

MODEL_SEQ_LEN, SAMPLES = 1024, 4  # sink metrics need long-ish windows, not many of them


HELP = "measure attention sinks and their collapse when Super Experts are pruned"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "sinks", help=HELP,
        description="Sink mass per layer and head, sink rate, D_sink (paper Eq. 7) against SE and random "
        "pruning, the layer-wise chain (massive activation + sink per layer), attention maps and the "
        "router's score for each SE at the sink token. Writes sinks.json, sinks_router.csv, "
        "sinks_chain/sinks_d_sink/sinks_maps .png + .svg into --out,"
        " and re-renders the folder's report.html (+ figures/) when it is a profile run.",
    )  # fmt: skip
    add_model_args(p, "local checkpoint folder or hub id (default: the model of --from, else the built-in demo)")
    p.add_argument("--from", dest="run_dir", metavar="RUN_DIR", help="a profile run folder: its SEs are 'super'")
    add_experts_arg(p, "prune", super_means="from --from, or the demo's")
    p.add_argument("--random", type=int, default=3, metavar="N_SEEDS",
                   help="random non-SE control sets of the same size (default 3, where prune-eval and quant-eval "
                   "default to 0: a control costs one forward here, a whole evaluation there; 0 = none)")
    p.add_argument("--layer-controlled", action="store_true", help="draw random controls in the SEs' layers")
    add_many_flag(p)
    p.add_argument("--layers", metavar="LIST", help="layers for attention maps, e.g. 3,7 (default: after the SEs)")
    p.add_argument("--heads", default="0", metavar="LIST", help="heads for attention maps (default 0; "
                   "the head average is always drawn)")  # fmt: skip
    src = p.add_mutually_exclusive_group()
    src.add_argument("--text", help="measure on this text")
    src.add_argument("--data", help="measure on windows of this data (file, folder, wikitext2, c4; default built-in)")
    p.add_argument("--samples", type=int, help="windows of --data (default 4, where profile takes 128: "
                   "sink metrics need a few long windows, not many)")
    p.add_argument("--seq-len", type=int, help="tokens per window (default 1024; demo 64: a sink shows "
                   "over long contexts, and the demo's text is short)")
    p.add_argument("--sink-keys", default="first", metavar="first|topK",
                   help="sink tokens: the first token, or the K most attended keys, e.g. top3 (default first)")
    p.add_argument("--epsilon", type=float, default=0.3, help="sink-rate threshold (Gu et al.; default 0.3)")
    p.add_argument("--seed", type=seed_arg, default=0, help="seed of windows and random controls (default 0)")
    p.add_argument("--out", metavar="DIR", help="folder to write (default: the --from run folder, so its report shows the "
                   "sinks section; else runs/sinks)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace an earlier sinks.json (and its figures) in --out")
    p.add_argument("--stream", action="store_true",
                   help="read the local checkpoint MODEL one decoder layer at a time (models larger than memory): "
                   "the same sink metrics, D_sink and attention maps; the router view is not measured "
                   "(sinks_router.csv holds only its header); --sink-keys topK reads the checkpoint twice. Not with "
                   "--device-map, --allow-missing-weights")  # fmt: skip
    add_prefetch_arg(p)
    p.set_defaults(run=run)


def build_args(argv: list[str]) -> argparse.Namespace:
    """Parse `sinks` arguments alone (for tests and notebooks)."""
    parser = argparse.ArgumentParser(prog="superexperts")
    add_parser(parser.add_subparsers())
    return parser.parse_args(["sinks", *argv])


def _int_list(text: str | None, flag: str) -> list[int] | None:
    if text is None:
        return None
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{flag} {text!r}: expected integers separated by commas, e.g. 1,3.") from None
    if not values:
        raise UserError(f"{flag} is empty; give integers separated by commas, e.g. 1,3.")
    return values


def _top_k(text: str) -> int | None:
    if text == "first":
        return None
    if text.startswith("top") and text[3:].isdigit() and int(text[3:]) >= 1:
        return int(text[3:])
    raise UserError(f"--sink-keys {text!r}: use 'first' or 'topK' with K >= 1, e.g. top3.")


def request(args: argparse.Namespace):
    from ..recipes.attention_sinks import SinksRequest

    model = model_of(args, args.run_dir)
    seq_len, samples = window_defaults(model is None, args.seq_len, args.samples, model_seq_len=MODEL_SEQ_LEN,
                                       default_samples=SAMPLES)  # fmt: skip
    return SinksRequest(
        model=model, out=args.out or args.run_dir or "runs/sinks", seq_len=seq_len, samples=samples,
        from_dir=args.run_dir, prune=args.prune, n_random=args.random, layer_controlled=args.layer_controlled,
        layers=_int_list(args.layers, "--layers"), heads=_int_list(args.heads, "--heads") or [], text=args.text,
        data=args.data, top_k=_top_k(args.sink_keys), epsilon=args.epsilon, seed=args.seed, device=args.device,
        device_map=args.device_map,
        dtype=args.dtype, trust_remote_code=args.trust_remote_code, allow_missing_weights=args.allow_missing_weights,
        overwrite=args.overwrite, stream=args.stream, prefetch=args.prefetch, many=args.many,
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from ..evaluate.sinks.study import summary_lines
    from ..recipes.attention_sinks import run_sinks

    req = request(args)
    study = run_sinks(req, echo=print)
    for line in summary_lines(study):
        print(line)
    router = "sinks_router.csv (header only: not measured)" if req.stream else "sinks_router.csv"
    print(f"wrote {req.out}/ (sinks.json, {router}, sinks_chain/d_sink/maps .png + .svg)")
    print_outside_run(req.out, "sinks.json")
    return 0
