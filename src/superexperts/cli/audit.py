"""`superexperts audit ORIGINAL COMPRESSED`: did the compressed checkpoint keep its Super Experts?"""

from __future__ import annotations

import argparse

from .common import add_device_map_arg, add_loading_flags, add_window_flags, out_dir, progress

HELP = "check that a compressed checkpoint kept its Super Experts (exit 0 intact, 1 damaged)"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "audit", help=HELP,
        description="Profile ORIGINAL and COMPRESSED (same architecture; anything transformers loads, e.g. an "
        "exported or dequantized checkpoint) on the same windows: each SE's max output, the massive activation "
        "per layer, sink mass and perplexity before/after. Writes audit.json and audit.html.",
    )  # fmt: skip
    p.add_argument("original", metavar="ORIGINAL", help="the uncompressed checkpoint folder (or hub id; demo: the "
                   "built-in synthetic demo)")  # fmt: skip
    p.add_argument("compressed", metavar="COMPRESSED", help="the compressed checkpoint folder (or hub id), e.g. an "
                   "`export` of ORIGINAL")  # fmt: skip
    p.add_argument("--from", dest="from_dir", metavar="RUN_DIR", help="a profile run folder of ORIGINAL: its SEs "
                   "are audited (default: profile ORIGINAL now, paper rule)")  # fmt: skip
    add_window_flags(p, samples_default="16: both checkpoints are profiled on them", seq_len_default="64 on the built-in text, else 2048",
                     ppl_default="--data, else the built-in text")
    p.add_argument("--threshold", type=float, default=0.5, help="damaged = an SE's output or the massive "
                   "activation it feeds fell by this fraction or more (default 0.5)")  # fmt: skip
    add_loading_flags(p)
    add_device_map_arg(p)  # the same placement for both checkpoints (same architecture)
    p.add_argument("--out", metavar="DIR", default="runs/audit", help="folder for audit.json and audit.html "
                   "(default runs/audit)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace an existing audit.json")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..compress.audit import format_audit
    from ..models.config_file import checkpoint_path
    from ..models.experts import resolve_experts
    from ..recipes.auditing import AuditRequest, run_audit

    out = out_dir(args, "audit.json", "runs/audit", inputs=[args.original, args.compressed, args.data, args.ppl],
                  also=["audit.html"])
    experts, source = resolve_experts("super", args.from_dir)
    if args.from_dir is not None:  # the run's SEs belong to ORIGINAL
        from ..identify.run_model import check_run_of

        check_run_of(args.from_dir, args.original, args.trust_remote_code)
    req = AuditRequest(
        original=checkpoint_path(args.original), compressed=checkpoint_path(args.compressed), experts=experts, experts_source=source, data=args.data,
        samples=args.samples, seq_len=args.seq_len, seed=args.seed, ppl=args.ppl, max_windows=args.max_windows,
        batch_size=args.batch_size, threshold=args.threshold, device=args.device, dtype=args.dtype,
        trust_remote_code=args.trust_remote_code, device_map=args.device_map,
    )  # fmt: skip
    document = run_audit(req, out, progress=progress(args))
    if document.get("synthetic"):
        from ..models.demo import BANNER

        print(BANNER)
    print(format_audit(document))
    print(f"wrote {out}/audit.json and {out}/audit.html")
    return 1 if document["verdict"] == "damaged" else 0  # a CI job fails on a damaged checkpoint
