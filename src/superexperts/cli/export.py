"""`superexperts export MODEL --experts super|LIST --out DIR`: write a pruned checkpoint, shard by shard."""

from __future__ import annotations

import argparse

from ..runs.errors import UserError
from .common import add_experts_arg

HELP = "write a checkpoint with experts pruned (zeroed), without loading the model"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help=HELP,
        description="Copy the safetensors checkpoint MODEL to --out with the down projections of the given "
        "experts zeroed (the paper's pruning); config, tokenizer and index are copied untouched, so the "
        "result can be served or evaluated with vLLM, SGLang, lm-eval or transformers at any scale. Writes the "
        "copied files and superexperts_export.json (what was zeroed) into --out.",
    )  # fmt: skip
    p.add_argument("model", metavar="MODEL", help="local checkpoint folder (config.json + *.safetensors); demo: the "
                   "built-in synthetic demo (its copy stays labelled synthetic)")  # fmt: skip
    add_experts_arg(p, "prune", default=None, what="zero")
    p.add_argument("--from", dest="run_dir", metavar="RUN_DIR", help="run folder of `superexperts profile`")
    p.add_argument("--mode", default="zero", choices=["zero"], help="how experts are pruned (default zero)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write (must be new or empty)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out (never other folders)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the checkpoint's own Python code")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..models.experts import format_experts
    from ..models.loading import checkpoint_path
    from ..recipes.exporting import ExportRequest, run_export

    if args.prune is None:
        raise UserError("--experts is required: 'super' with --from RUN_DIR, or a list such as 1:68,2:92.")
    req = ExportRequest(model=checkpoint_path(args.model), prune=args.prune, out=args.out, from_dir=args.run_dir, mode=args.mode,
                        overwrite=args.overwrite, trust_remote_code=args.trust_remote_code)  # fmt: skip
    experts, record = run_export(req)
    mib = record["zeroed_bytes"] / 2**20
    print(f"pruned {format_experts(experts)} ({args.mode}): {mib:.3g} MiB zeroed in "
          f"{len(record['zeroed_shards'])} shard(s); wrote {args.out}")  # fmt: skip
    return 0
