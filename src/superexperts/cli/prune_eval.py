"""`superexperts prune-eval [MODEL]`: perplexity, tasks and generations with and without the SEs."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "prune-eval", help="evaluate a model with its Super Experts (or any experts) ablated, against random controls",
        description="Conditions: original, super (or custom), random-<seed> and layer-controlled-<seed> "
        "(random non-SEs of the same count). Each is measured on perplexity (--ppl), lm-eval tasks (--tasks) "
        "and greedy generations with repetition metrics (--generate); writes prune_eval.json.",
    )  # fmt: skip
    p.add_argument("model", nargs="?", metavar="MODEL", help="local checkpoint folder or hub id (default: the "
                   "model of --from, else the built-in demo)")  # fmt: skip
    p.add_argument("--experts", default="super", metavar="super|LIST|FILE",
                   help="experts to ablate: 'super' (from --from, else profiled now), a list such as "
                   "1:68,2:92,4:shared, or a file (JSON records or super_experts.json) (default super)")
    p.add_argument("--from", dest="from_dir", metavar="RUN_DIR", help="a profile run folder: its SEs are 'super'")
    p.add_argument("--mode", default="zero", help="zero (paper: routed, contributes nothing) | mean (output "
                   "replaced by its calibration mean) | skip (removed from routing) (default zero)")  # fmt: skip
    p.add_argument("--random", type=int, default=0, metavar="N_SEEDS", help="random non-SE control sets (default 0)")
    p.add_argument("--layer-controlled", action="store_true",
                   help="also draw N_SEEDS controls inside the SEs' layers (paper v3)")
    p.add_argument("--seed", type=int, default=0, help="first seed of the controls and windows (default 0)")
    p.add_argument("--ppl", metavar="DATA", help="perplexity data: file, folder, wikitext2, c4 or a dataset "
                   "name (default: the demo's held-out text, in BOS-first windows, for the demo; none otherwise)")  # fmt: skip
    p.add_argument("--seq-len", type=int, help="perplexity/calibration window length (default 2048; demo 64)")
    p.add_argument("--max-windows", type=int, help="perplexity windows kept (default all; the reference's C4: 256)")
    p.add_argument("--tasks", metavar="LIST", help="lm-eval tasks, e.g. arc_easy,piqa (needs the eval extra)")
    p.add_argument("--tasks-include", metavar="DIR", help="folder of extra lm-eval task YAMLs")
    p.add_argument("--limit", type=int, help="documents per task (quick looks; not comparable to published)")
    p.add_argument("--num-fewshot", type=int, help="few-shot examples per task (default: the task's)")
    p.add_argument("--generate", action="append", default=[], metavar="PROMPTS",
                   help="a prompts file (one per line) or a prompt; repeatable")
    p.add_argument("--max-new-tokens", type=int, default=64, help="tokens generated per prompt (default 64)")
    p.add_argument("--causal", type=int, nargs="?", const=5, metavar="TOP_N",
                   help="also ablate each pruned expert alone (+ the TOP_N next candidates of the run's profile, "
                   "default 5) and report the massive-activation drop and loss change")
    p.add_argument("--data", help="calibration data for --experts super without --from and --mode mean "
                   "(default built-in text)")  # fmt: skip
    p.add_argument("--samples", type=int, help="calibration windows (default 128; demo 16)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default auto)")
    p.add_argument("--dtype", default="auto", help="auto | bfloat16 | float16 | float32 (default auto)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the checkpoint's own Python code")
    p.add_argument("--out", metavar="DIR", help="folder for prune_eval.json (default: --from RUN_DIR, else "
                   "runs/prune-eval)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace an existing prune_eval.json")
    p.set_defaults(run=run)


def read_prompts(values: list[str]) -> list[str]:
    """Each value is a file of prompts (one per non-empty line) or a prompt itself."""
    prompts = []
    for value in values:
        path = Path(value)
        if path.is_file():
            prompts += [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        elif path.suffix in (".txt", ".jsonl") or "/" in value:
            raise UserError(f"--generate {value}: no such prompts file; pass a file (one prompt per line) or a prompt.")
        else:
            prompts.append(value)
    if values and not prompts:
        raise UserError("--generate: the prompts file is empty; put one prompt per line.")
    return prompts


def _out_dir(args: argparse.Namespace) -> Path:
    out = Path(args.out or args.from_dir or "runs/prune-eval")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder; pass a folder path.")
    if (out / "prune_eval.json").exists() and not args.overwrite:
        raise UserError(f"{out}/prune_eval.json exists; pass --overwrite or choose another --out.")
    return out


def _request(args: argparse.Namespace):
    from ..prune_eval import read_experts
    from ..prune_eval_run import PruneEvalRequest

    tasks = [t.strip() for t in (args.tasks or "").split(",") if t.strip()]
    if args.tasks is not None and not tasks:
        raise UserError("--tasks is empty; pass task names such as arc_easy,piqa.")
    experts, source = read_experts(args.experts, args.from_dir)
    req = PruneEvalRequest(
        experts=experts, experts_source=source, from_dir=args.from_dir, mode=args.mode, n_random=args.random,
        layer_controlled=args.layer_controlled, seed=args.seed, ppl=args.ppl, seq_len=args.seq_len,
        max_windows=args.max_windows, data=args.data, samples=args.samples, batch_size=args.batch_size,
        tasks=tasks, limit=args.limit, num_fewshot=args.num_fewshot, prompts=read_prompts(args.generate),
        max_new_tokens=args.max_new_tokens, causal=args.causal,
    )  # fmt: skip
    req.check()
    if tasks:  # lm-eval missing or an unknown task: fail before the model loads
        from ..evaluate.lm_eval import check_tasks

        req.task_manager = check_tasks(tasks, include_path=args.tasks_include)
    return req


def run(args: argparse.Namespace) -> int:
    from ..loading import load_config, load_model
    from ..prune_eval import format_causal, format_summary, format_table
    from ..prune_eval_run import check_experts_in_config, model_of_run, prune_eval_run

    req = _request(args)
    out = _out_dir(args)
    spec = args.model if args.model is not None or args.from_dir is None else model_of_run(args.from_dir)
    if spec is not None and req.experts is not None:  # before reading the weights
        check_experts_in_config(req.experts, load_config(spec, args.trust_remote_code))
    loaded = load_model(spec, device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code)
    req.check(loaded.synthetic)
    if loaded.synthetic:
        print("model: built-in SYNTHETIC demo (tiny Qwen3-MoE with planted Super Experts; numbers are made up)")
    document = prune_eval_run(loaded, req, out, progress=True)
    print(format_table(document["conditions"]))
    summary = format_summary(document["summary"])
    if summary:
        print(summary)
    if "causal" in document:
        print(format_causal(document["causal"]))
    print(f"wrote {out}/prune_eval.json")
    return 0
