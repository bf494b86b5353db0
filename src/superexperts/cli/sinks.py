"""`superexperts sinks [MODEL]`: attention sinks before and after pruning the Super Experts."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError

DEMO_DEFAULTS = {"seq_len": 64, "samples": 4}
MODEL_DEFAULTS = {"seq_len": 1024, "samples": 4}


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "sinks", help="measure attention sinks and their collapse when Super Experts are pruned",
        description="Sink mass per layer and head, sink rate, D_sink (paper Eq. 7) against SE and random "
        "pruning, the layer-wise chain (massive activation + sink per layer), attention maps and the "
        "router's score for each SE at the sink token. Writes sinks.json and figures (PNG + SVG).",
    )  # fmt: skip
    p.add_argument("model", nargs="?", metavar="MODEL", help="local checkpoint folder or hub id (default: "
                   "the model of --from, else the built-in demo)")  # fmt: skip
    p.add_argument("--from", dest="run_dir", metavar="RUN_DIR", help="a profile run folder: its SEs are 'super'")
    p.add_argument("--prune", default="super", metavar="super|LIST",
                   help="experts to prune: 'super' (from --from or the demo) or e.g. 1:68,2:92 (default super)")
    p.add_argument("--random", type=int, default=3, metavar="N_SEEDS",
                   help="random non-SE control sets of the same size (default 3; 0 = none)")
    p.add_argument("--layer-controlled", action="store_true", help="draw random controls in the SEs' layers")
    p.add_argument("--layers", metavar="LIST", help="layers for attention maps, e.g. 3,7 (default: after the SEs)")
    p.add_argument("--heads", default="0", metavar="LIST", help="heads for attention maps (default 0; "
                   "the head average is always drawn)")  # fmt: skip
    src = p.add_mutually_exclusive_group()
    src.add_argument("--text", help="measure on this text")
    src.add_argument("--data", help="measure on windows of this data (file, folder, wikitext2, c4; default built-in)")
    p.add_argument("--samples", type=int, help="windows of --data (default 4)")
    p.add_argument("--seq-len", type=int, help="tokens per window (default 1024; demo 64)")
    p.add_argument("--sink-keys", default="first", metavar="first|topK",
                   help="sink tokens: the first token, or the K most attended keys, e.g. top3 (default first)")
    p.add_argument("--epsilon", type=float, default=0.3, help="sink-rate threshold (Gu et al.; default 0.3)")
    p.add_argument("--seed", type=int, default=0, help="seed of windows and random controls (default 0)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default auto)")
    p.add_argument("--dtype", default="auto", help="auto | bfloat16 | float16 | float32 (default auto)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the checkpoint's own Python code")
    p.add_argument("--out", help="folder to write (default: the --from run folder, so its report shows the "
                   "sinks section; else runs/sinks)")  # fmt: skip
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


def _check_args(args: argparse.Namespace) -> None:
    if args.random < 0:
        raise UserError(f"--random must be >= 0, got {args.random}.")
    if not 0.0 < args.epsilon < 1.0:
        raise UserError(f"--epsilon must be in (0, 1), got {args.epsilon}.")
    if args.text is not None and not args.text.strip():
        raise UserError("--text is empty; pass a sentence (at least 2 tokens).")
    if args.run_dir is not None and not (Path(args.run_dir) / "super_experts.json").is_file():
        raise UserError(f"--from {args.run_dir}: no super_experts.json there; run `superexperts profile --out "
                        f"{args.run_dir}` first.")
    if args.prune == "super" and args.run_dir is None and args.model is not None:
        raise UserError("--prune super needs the SE list: pass --from RUN_DIR (a profile run of this model) "
                        "or list the experts, e.g. --prune 1:68,2:92.")


def _model_spec(args: argparse.Namespace) -> str | None:
    """MODEL, else the model the --from run profiled (None = the built-in demo)."""
    if args.model is not None or args.run_dir is None:
        return args.model
    from ..io import read_json

    data = read_json(Path(args.run_dir) / "profile.json", "profile")
    meta = data.get("meta", {}) if isinstance(data, dict) else {}
    return None if meta.get("synthetic") else meta.get("model_path") or meta.get("model")


def _experts(args: argparse.Namespace, model_map, synthetic: bool) -> list:
    from ..ablate import parse_experts, validate_experts
    from ..ablate.spec import experts_from_records
    from ..models.demo import DEMO_SUPER_EXPERTS
    from ..run import load_super_experts

    if args.prune != "super":
        experts = parse_experts(args.prune)
    elif args.run_dir is not None:
        experts = experts_from_records(load_super_experts(args.run_dir), f"{args.run_dir}/super_experts.json")
    elif synthetic:
        experts = list(DEMO_SUPER_EXPERTS)
    else:
        raise UserError("--prune super needs --from RUN_DIR or an explicit list such as 1:68,2:92.")
    if not experts:
        raise UserError("the run found no Super Experts, so there is nothing to prune; pass --prune LIST.")
    return validate_experts(model_map, experts)


def _input_ids(args: argparse.Namespace, tokenizer, synthetic: bool):
    from ..data import calibration

    if args.text is not None:
        ids = tokenizer(args.text, return_tensors="pt").input_ids
        if ids.shape[1] < 2:
            raise UserError(f"--text gives {ids.shape[1]} token(s); sink metrics need at least 2.")
        return ids, {"text": args.text}
    defaults = DEMO_DEFAULTS if synthetic else MODEL_DEFAULTS
    seq_len = args.seq_len if args.seq_len is not None else defaults["seq_len"]
    samples = args.samples if args.samples is not None else defaults["samples"]
    calib = calibration(args.data, tokenizer, seq_len=seq_len, samples=samples, seed=args.seed)
    return calib.input_ids, {"data": calib.spec, "sampling": calib.sampling}


def _check_sizes(sizes: tuple[int, int], layers: list[int] | None, heads: list[int]) -> None:
    from ..sinks.validate import check_heads, check_layers

    check_layers(sizes[0], layers or [])
    check_heads(sizes[1], heads)


def run(args: argparse.Namespace) -> int:
    from ..ablate.controls import random_controls
    from ..io import write_files
    from ..loading import load_config, load_model
    from ..meta import base_metadata, tensor_sha256
    from ..models.adapters import map_model
    from ..sinks.study import sinks_study, study_files, summary_lines
    from ..sinks.validate import config_sizes, default_map_layers

    _check_args(args)
    layers, heads = _int_list(args.layers, "--layers"), _int_list(args.heads, "--heads") or []
    top_k = _top_k(args.sink_keys)
    spec = _model_spec(args)
    if spec is not None:  # range checks from the config alone, before loading the weights
        _check_sizes(config_sizes(load_config(spec, args.trust_remote_code)), layers, heads)
    loaded = load_model(spec, device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code)
    model, mm = loaded.model, map_model(loaded.model)
    _check_sizes(config_sizes(model.config), layers, heads)
    experts = _experts(args, mm, loaded.synthetic)
    layers = layers if layers is not None else default_map_layers(mm.num_layers, experts)
    ids, source = _input_ids(args, loaded.tokenizer, loaded.synthetic)
    controls = random_controls(mm, experts, args.random, layer_controlled=args.layer_controlled, seed=args.seed)
    named = {f"random-{args.seed + i}": c for i, c in enumerate(controls)}
    if loaded.synthetic:
        print("model: built-in SYNTHETIC demo (tiny Qwen3-MoE with planted Super Experts; numbers are made up)")
    study = sinks_study(model, ids, super_experts=experts, controls=named, map_layers=layers, map_heads=heads,
                        tokens=loaded.tokenizer.convert_ids_to_tokens(ids[0]), top_k=top_k,
                        epsilon=args.epsilon, tokenizer=loaded.tokenizer)
    meta = base_metadata(tool="sinks", seed=args.seed, **loaded.describe(), input=source,
                         input_shape=list(ids.shape), data_sha256=tensor_sha256(ids),
                         random_controls="layer-controlled" if args.layer_controlled else "global")
    out = args.out or args.run_dir or "runs/sinks"
    write_files(out, study_files(study, meta))
    for line in summary_lines(study):
        print(line)
    print(f"wrote {out}/ (sinks.json, sinks_router.csv, sinks_chain/d_sink/maps .png + .svg)")
    return 0
