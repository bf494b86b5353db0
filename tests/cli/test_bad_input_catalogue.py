"""The bad-input catalogue (issue 14): damaged checkpoints, bad data, bad parameters, mismatched runs and
dangerous --out targets through every subcommand.

Every case must: exit 2, print exactly one line on stderr (no traceback, no library noise), create
nothing and leave every input byte-identical (the whole working folder is hashed before and after).
`early` cases must also fail before any model weight is read. Cases that fail today because of
CLI-level work still to land are strict xfails naming the issue item: flip them when it lands.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from catalogue_workspace import PROFILE_ARGS

from file_trees import tree_digest
from superexperts.cli import main

SRC = str(Path(__file__).resolve().parents[2] / "src")
CPU = ["--device", "cpu"]
PRUNE_EVAL = ["--ppl", "data/good.txt", "--seq-len", "16", *CPU]
SINKS = ["--random", "0", "--seq-len", "16", "--samples", "2", *CPU]
EXPORT = ["--experts", "1:3", "--out", "pruned"]


def xfail(item: str, why: str):
    return pytest.mark.xfail(strict=True, reason=f"issue 14 item {item} (CLI, lead): {why}")


def case(argv: list[str], message: str, *, early: bool = False, marks=(), name: str | None = None):
    return pytest.param(argv, message, early, marks=marks, id=name or " ".join(argv)[:90])


DAMAGED = {  # checkpoint folder -> what the one line says
    "truncated": "truncated",
    "badheader": "not a valid safetensors file",
    "emptyweights": "not a valid safetensors file",
    "noweights": "no safetensors weights",
    "missingshard": "missing shard",
    "missingexpert": "down_proj",
    "missingattn": "q_proj",
    "unexpected": "no place for",
    "garbageconfig": "config.json",
    "remote": "--trust-remote-code",
    "nothere": "nothere",
}
STREAM_MESSAGE = {"missingattn": "no weights for layer 1"}


def damaged_cases():
    for folder, message in DAMAGED.items():
        yield case(["profile", folder, *PROFILE_ARGS], message)
        yield case(["profile", folder, "--stream", *PROFILE_ARGS], STREAM_MESSAGE.get(folder, message))
        yield case(["prune-eval", folder, "--experts", "1:3", *PRUNE_EVAL], message)
        yield case(["sinks", folder, "--experts", "1:3", *SINKS], message)
        yield case(["sinks", folder, "--experts", "1:3", "--stream", *SINKS], STREAM_MESSAGE.get(folder, message))
        if folder not in ("missingattn", "unexpected"):  # export copies non-expert tensors as they are
            yield case(["export", folder, *EXPORT], "expert 3" if folder == "missingexpert" else message)


DATA = {  # --data file -> message
    "data/latin1.txt": "not UTF-8 text",
    "data/binary.txt": "not a text file",
    "data/scalar.json": "holds a JSON int",
    "data/numbers.jsonl": "no string text",
    "data/bad.parquet": "not a readable parquet file",
    "data/empty.txt": "is empty",
    "data/notext.jsonl": "'text' field",
    "data/missing.txt": "no such file",
}


def data_cases():
    for spec, message in DATA.items():
        yield case(["profile", "good", "--data", spec, *PROFILE_ARGS], message, name=f"profile --data {spec}")
        yield case(["profile", "good", "--data", spec, *PROFILE_ARGS], message, early=True,
                   name=f"profile --data {spec} (before loading)")
    yield case(["prune-eval", "good", "--experts", "1:3", "--ppl", "data/latin1.txt", "--seq-len", "16", *CPU],
               "not UTF-8 text")  # fmt: skip
    yield case(["sinks", "good", "--experts", "1:3", "--data", "data/binary.txt", *SINKS], "not a text file")
    yield case(["prune-eval", "good", "--experts", "1:3", "--ppl", "missing.txt", "--seq-len", "16", *CPU], "--ppl",
               early=True)
    yield case(["prune-eval", "good", "--experts", "1:3", "--generate", "prompts.bin", *PRUNE_EVAL], "prompts.bin",
               early=True)


PARAMETERS = [
    case(["profile", "good", "--device", "banana", *PROFILE_ARGS[:4], "--no-report"], "not a device", early=True),
    case(["profile", "good", "--seq-len", "1", "--device", "cpu"], "--seq-len must be >= 2", early=True),
    case(["profile", "good", "--criterion", "papr", *PROFILE_ARGS], "Did you mean 'paper'", early=True),
    case(["profile", "good", "--param", "percentile=200", *PROFILE_ARGS], "percentile", early=True),
    case(["profile", "good", "--param", "max_fraction=3", *PROFILE_ARGS], "max_fraction", early=True),
    case(["profile", "good", "--include-layers", "1,99", *PROFILE_ARGS], "99", early=True),
    case(["profile", "good", "--resume", *PROFILE_ARGS], "--stream", early=True),
    case(["identify", "--from", "run", "--criterion", "papr"], "Did you mean 'paper'"),
    case(["identify", "--from", "nothere"], "not found"),
    case(["report", "--from", "mine"], "no profile.json"),
    case(["compare", "run", "run"], "twice"),
    case(["compare", "run", "run2"], "identify"),
    case(["export", "good", "--experts", "1:99", "--out", "pruned"], "out of range"),
    case(["export", "good", "--experts", "experts.bin", "--out", "pruned"], "not a text expert list"),
    case(["export", "good", "--experts", "missing.json", "--out", "pruned"], "not found"),
    case(["export", "good", "--experts", "super", "--out", "pruned"], "--from"),
    case(["prune-eval", "good", "--experts", "experts.bin", *PRUNE_EVAL], "not a text expert list", early=True),
    case(["prune-eval", "good", "--experts", "1:99", *PRUNE_EVAL], "out of range", early=True),
    case(["prune-eval", "good", "--experts", "1:3", "--mode", "banana", *PRUNE_EVAL], "banana", early=True),
    case(["prune-eval", "good", "--experts", "1:3", "--random", "-1", *PRUNE_EVAL], "--random", early=True),
    case(["prune-eval", "good", "--atoms", "1:3", *PRUNE_EVAL], "LAYER:EXPERT:ATOM", early=True),
    case(["prune-eval", "good", "--atoms", "1:3:0", "--stream", *PRUNE_EVAL], "drop --stream", early=True),
    case(["prune-eval", "good", "--atoms", "1:3:999", *PRUNE_EVAL], "atom 1:3:999 is out of range", early=True),
    case(["prune-eval", "good", "--atoms", "9:3:0", *PRUNE_EVAL], "atom 9:3:0 is out of range", early=True),
    case(["prune-eval", "good", "--atoms", "1:3:0", "--experts", "1:3", *PRUNE_EVAL], "--atoms and --experts",
         early=True),
    case(["prune-eval", "good", "--prune-by", "camera", "--fraction", "0.2", *PRUNE_EVAL], "--from", early=True),
    case(["sinks", "good", "--experts", "1:3", "--epsilon", "2", *SINKS], "--epsilon", early=True),
    case(["sinks", "good", "--experts", "1:3", "--heads", "x", *SINKS], "--heads", early=True),
    case(["sinks", "good", "--experts", "1:3", "--layers", "1,99", *SINKS], "99", early=True),
    case(["sinks", "org/model", "--experts", "1:3", "--stream", *SINKS], "local checkpoint folder", early=True),
    case(["sinks", "good", "--experts", "1:3", "--stream", "--device-map", "auto", *SINKS[:-2]],
         "--stream and --device-map", early=True),
    case(["sinks", "--experts", "1:3", "--stream", *SINKS], "--stream needs MODEL", early=True),
]

RUNS = [
    case(["export", "good", "--experts", "super", "--from", "otherrun", "--out", "pruned"], "otherrun"),
    case(["prune-eval", "good", "--from", "otherrun", *PRUNE_EVAL, "--out", "pe"], "otherrun", early=True),
    case(["sinks", "good", "--from", "otherrun", *SINKS, "--out", "sk"], "otherrun", early=True),
    # issue 23: every subcommand that takes a run checks it, before loading weights
    case(["quant-eval", "good", "--from", "otherrun", "--seq-len", "16", *CPU, "--out", "qe"], "otherrun", early=True),
    case(["audit", "good", "good2", "--from", "otherrun", "--seq-len", "16", *CPU, "--out", "au"], "otherrun",
         early=True),
    case(["protect", "--from", "otherrun", "--for", "json", "--checkpoint", "good"], "otherrun"),
    # the same architecture with other weights: named by the fingerprint the run recorded
    case(["prune-eval", "twin", "--from", "run", *PRUNE_EVAL, "--out", "pe"], "weights fingerprint", early=True),
    case(["quant-eval", "twin", "--from", "run", "--seq-len", "16", *CPU, "--out", "qe"], "weights fingerprint",
         early=True),
    case(["sinks", "twin", "--from", "run", *SINKS, "--out", "sk"], "weights fingerprint", early=True),
    case(["audit", "twin", "good", "--from", "run", "--seq-len", "16", *CPU, "--out", "au"], "weights fingerprint",
         early=True),
    case(["export", "twin", "--experts", "super", "--from", "run", "--out", "pruned"], "weights fingerprint"),
    case(["protect", "--from", "run", "--for", "json", "--checkpoint", "twin"], "weights fingerprint"),
    # a run made before absolute paths names its model relative to another folder: never resolved here
    case(["prune-eval", "--from", "legacyrun", *PRUNE_EVAL, "--out", "pe"], "predates absolute model paths",
         early=True),
    case(["quant-eval", "--from", "legacyrun", "--seq-len", "16", *CPU, "--out", "qe"],
         "predates absolute model paths", early=True),
    case(["sinks", "--from", "legacyrun", *SINKS, "--out", "sk"], "predates absolute model paths", early=True),
    case(["protect", "--from", "legacyrun", "--for", "json"], "predates absolute model paths", early=True),
]

OUTS = [
    case(["export", "good", *EXPORT[:2], "--out", ".", "--overwrite"], "input"),
    case(["export", "good", *EXPORT[:2], "--out", "good", "--overwrite"], "input"),
    case(["export", "good", *EXPORT[:2], "--out", "good/sub"], "inside the input"),
    case(["export", "good", *EXPORT[:2], "--out", "link", "--overwrite"], "input"),
    case(["export", "link", *EXPORT[:2], "--out", "good", "--overwrite"], "input"),
    case(["export", "good", *EXPORT[:2], "--out", "mine", "--overwrite"], "did not write"),
    case(["export", "good", *EXPORT[:2], "--out", "mine"], "--overwrite"),
    case(["export", "good", *EXPORT[:2], "--out", "notes.txt", "--overwrite"], "is a file"),
    case(["export", "good", "--experts", "super", "--from", "run", "--out", "run", "--overwrite"], "input"),
    case(["profile", "good", *PROFILE_ARGS, "--out", "notes.txt"], "is a file", early=True),
    case(["profile", "good", *PROFILE_ARGS, "--out", "run"], "--overwrite", early=True),
    case(["profile", "good", *PROFILE_ARGS, "--out", "good", "--overwrite"], "input", early=True),
    case(["profile", "good", *PROFILE_ARGS, "--out", "mine", "--overwrite"], "did not write", early=True),
    case(["prune-eval", "good", "--experts", "1:3", *PRUNE_EVAL, "--out", "notes.txt"], "is a file", early=True),
    case(["prune-eval", "good", "--experts", "1:3", *PRUNE_EVAL, "--out", "good"], "input", early=True),
    case(["sinks", "good", "--experts", "1:3", *SINKS, "--out", "notes.txt"], "notes.txt", early=True),
    case(["sinks", "good", "--experts", "1:3", *SINKS, "--out", "good"], "input", early=True),
    case(["sinks", "--from", "sinksrun", *SINKS], "--overwrite", early=True),
    case(["compare", "run", "otherrun", "--out", "cmp"], "--overwrite"),
]

# Issue 23: one placement rule for every writer. Per subcommand: --out an input folder or file, a
# link, /dev/full and a read-only folder (`ro/`, mounted read-only by the `readonly` fixture).
PROTECT = ["protect", "--from", "run", "--for", "json"]
QUANT_EVAL = ["quant-eval", "good", "--from", "run", "--seq-len", "16", "--samples", "2", *CPU]
AUDIT = ["audit", "good", "good2", "--seq-len", "16", "--samples", "2", *CPU]
PRUNE = ["prune-eval", "good", "--experts", "1:3", *PRUNE_EVAL]
SINK = ["sinks", "good", "--experts", "1:3", *SINKS]
COMPARE = ["compare", "run", "sinksrun"]
DEVICE = "device or system path"
READ_ONLY = "not writable"


def placement_cases():
    for name, argv in {"quant-eval": QUANT_EVAL, "audit": AUDIT, "prune-eval": PRUNE, "sinks": SINK,
                       "compare": COMPARE}.items():  # fmt: skip
        yield case([*argv, "--out", "userres", "--overwrite"], "did not write", early=True)
        yield case([*argv, "--out", "notes_link"], "is a file", early=True)
        yield case([*argv, "--out", "/dev/full", "--overwrite"], DEVICE, early=True)
        yield case([*argv, "--out", "/dev/stdout"], DEVICE, early=True)
        yield case([*argv, "--out", "ro/out"], READ_ONLY, early=True)
        yield case([*argv, "--out", "run" if name == "compare" else "good", "--overwrite"], "input", early=True)
    yield case([*COMPARE, "--out", "other"], "checkpoint folder")
    yield case([*AUDIT, "--out", "other"], "checkpoint folder", early=True)
    yield case([*PROTECT, "--out-file", "run/profile.json", "--overwrite"], "own profile.json")
    yield case([*PROTECT, "--out-file", "run/super_experts.json", "--overwrite"], "own super_experts.json")
    yield case([*PROTECT, "--out-file", "run/expert_stats.csv", "--overwrite"], "own expert_stats.csv")
    yield case([*PROTECT, "--out-file", "good/keep.json"], "checkpoint folder")
    yield case([*PROTECT, "--out-file", "notes_link", "--overwrite"], "a link to")
    yield case([*PROTECT, "--out-file", "notes.txt", "--overwrite"], "did not write")
    yield case([*PROTECT, "--out-file", "/dev/full", "--overwrite"], DEVICE)
    yield case([*PROTECT, "--out-file", "/dev/stdout", "--overwrite"], DEVICE)
    yield case([*PROTECT, "--out-file", "fifo", "--overwrite"], "pipe")
    yield case([*PROTECT, "--out-file", "mine"], "is a folder")
    yield case([*PROTECT, "--out-file", "ro/keep.json"], READ_ONLY)
    yield case(["protect", "good", "--for", "json", "--profile-out", "mine"], "--profile-out mine", early=True)
    yield case(["profile", "good", *PROFILE_ARGS, "--out", "/dev/full", "--overwrite"], DEVICE, early=True)
    yield case(["profile", "good", *PROFILE_ARGS, "--out", "notes_link"], "is a file", early=True)
    yield case(["profile", "good", *PROFILE_ARGS, "--out", "ro/p"], READ_ONLY, early=True)
    yield case(["profile", "good", *PROFILE_ARGS, "--out", "ro/run", "--overwrite"], READ_ONLY, early=True)
    yield case(["export", "good", *EXPORT[:2], "--out", "/dev/full", "--overwrite"], DEVICE)
    yield case(["export", "good", *EXPORT[:2], "--out", "notes_link", "--overwrite"], "is a file")
    yield case(["export", "good", *EXPORT[:2], "--out", "ro/pruned"], READ_ONLY)
    yield case(["export", "good", *EXPORT[:2], "--out", "other", "--overwrite"], "did not write")
    for command in ("report", "identify"):
        yield case([command, "--from", "ro/run"], READ_ONLY)
        yield case([command, "--from", "/dev/full"], "/dev/full")
    yield case(["audit", "good", "link", *AUDIT[3:]], "same folder", early=True)
    yield case(["audit", "good", "good", *AUDIT[3:]], "same folder", early=True)


# Issue 23 item 7: the parser's own errors in one line too (no usage block), naming the flag.
PARSER = [
    case(["quant-eval", "--bits", "nan"], "--bits 'nan': expected numbers separated by commas", early=True),
    case(["quant-eval", "--group-size", "1e30"], "--group-size: invalid int value", early=True),
    case(["profile", "good", "--stream", "--prefetch", "maybe"], "--prefetch: invalid choice", early=True),
    case(["profile", "good", "--banana"], "unrecognized arguments: --banana", early=True),
    case(["audit", "good", "good2", "--threshold", "-inf", *CPU], "--threshold -inf must be in (0, 1)", early=True),
    case(["audit", "good", "good2", "--threshold", "nan", *CPU], "--threshold nan must be in (0, 1)", early=True),
    case(["sinks", "good", "--experts", "1:3", "--epsilon", "-0.5", *SINKS[:-2]], "--epsilon", early=True),
    # item 6: seeds the generators take; controls bounded by the disjoint sets the model has
    *(case([*argv, "--seed", seed], "--seed: ", early=True)
      for argv in (["profile", "good"], ["prune-eval", "good"], ["sinks", "good"], ["quant-eval", "good"],
                   ["audit", "good", "good2"])
      for seed in ("-1", str(2**70))),
    # the disjoint control sets are counted from the config numbers, before the weights are read
    case(["prune-eval", "good", "--experts", "1:3", "--random", "99999999999999999999", "--many", *PRUNE_EVAL],
         "pass --random", early=True),
    case(["prune-eval", "good", "--experts", "1:3", "--random", "20", "--layer-controlled", *PRUNE_EVAL],
         "disjoint control sets (of 1 non-SE experts each) in the SEs' layers", early=True),
    case(["quant-eval", "good", "--from", "run", "--random", "100000", "--seq-len", "16", *CPU, "--out", "qe",
          "--many"], "disjoint control sets", early=True),
    case(["sinks", "good", "--experts", "1:3", "--random", "100000", "--many", *SINKS[2:]],
         "disjoint control sets (of 1 non-SE experts each) in the model", early=True),
    case(["quant-eval", "good", "--from", "run", "--random", "100000", "--seq-len", "16", *CPU, "--out", "qe"],
         "100004 conditions planned", early=True),
    case([*PRUNE, "--random", "49", "--layer-controlled"], "100 conditions planned", early=True),
    case([*SINK[:4], "--random", "49", *SINK[6:]], "51 conditions planned", early=True),
]

# Issue 23 item 7: checks that need no model run before it, and every message names a flag the command has.
EARLY = [
    case([*QUANT_EVAL, "--ppl", "data/binary.txt"], "not a text file", early=True),
    case([*QUANT_EVAL, "--ppl", "data/binaryish.bin.txt"], "not a text file", early=True),
    case([*QUANT_EVAL, "--data", "data/latin1.txt"], "not UTF-8 text", early=True),
    case([*AUDIT, "--ppl", "data/binary.txt"], "not a text file", early=True),
    case([*AUDIT, "--data", "data/missing.txt"], "no such file", early=True),
    case([*QUANT_EVAL, "--limit", "0"], "--limit must be >= 1", early=True),
    case([*PRUNE, "--limit", "0"], "--limit must be >= 1", early=True),
    case(["profile", "good", "--data", "fifo", *PROFILE_ARGS], "is a pipe or device", early=True),
    case(["quant-eval", "good", "--from", "emptyrun", *QUANT_EVAL[4:]], "superexperts identify --from emptyrun",
         early=True),
    case(["prune-eval", "good", "--from", "emptyrun", *PRUNE_EVAL], "--experts 1:68", early=True),
    case(["sinks", "good", "--from", "emptyrun", *SINKS], "--prune 1:68", early=True),
    case(["profile", "good", "--stream", "--state-dir", "foreignstate", *PROFILE_ARGS], "--state-dir"),
]

# Issue 23 item 4: plan refuses what it cannot plan, in one line.
PLAN = [
    *(case(["plan", "good", flag, value], f"{flag} must be a finite positive number", early=True)
      for flag in ("--bandwidth", "--tflops", "--memory", "--disk", "--activation-bandwidth")
      for value in ("inf", "-inf", "nan", "0")),
    case(["plan", "dense"], "no MoE layers", early=True),
    case(["plan", "nofields"], "does not give num_hidden_layers, hidden_size, vocab_size", early=True),
    case(["plan", "garbageconfig"], "config.json", early=True),
]

CASES = [*damaged_cases(), *data_cases(), *PARAMETERS, *RUNS, *OUTS, *placement_cases(), *PARSER, *PLAN, *EARLY]


def shown_lines(stream: str) -> list[str]:
    """The non-empty lines a terminal shows: what follows the last carriage return of each line
    (progress bars redraw with '\\r' and may erase themselves)."""
    return [shown for line in stream.split("\n") if (shown := line.rpartition("\r")[2].strip())]


class ModelLoaded(AssertionError):
    """Raised when an `early` case reads model weights before refusing."""


@pytest.fixture
def no_model_loading(monkeypatch):
    import transformers

    from superexperts.models.checkpoints.reader import Checkpoint

    def refuse(*args, **kwargs):
        raise ModelLoaded("model weights were read before the bad input was refused")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    monkeypatch.setattr(Checkpoint, "load", refuse)


@pytest.mark.parametrize(("argv", "message", "early"), CASES)
def test_bad_input(workspace, capfd, request, argv, message, early):
    if any(arg.startswith("ro/") for arg in argv):
        request.getfixturevalue("readonly")
    before = tree_digest(workspace)
    if early:
        request.getfixturevalue("no_model_loading")
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors exit from parse_args (one line: OneLineParser)
        code = e.code
    err = capfd.readouterr().err
    assert code == 2, err
    assert len(shown_lines(err)) == 1 and "Traceback" not in err, err
    assert shown_lines(err)[0].startswith(f"superexperts {argv[0]}: error: ") and message in err, err
    assert tree_digest(workspace) == before, "created, changed or deleted files"


@pytest.mark.slow  # a fresh interpreter imports torch and transformers: seconds per case
@pytest.mark.parametrize(
    "argv",
    [["export", "good", "--experts", "1:3", "--out", ".", "--overwrite"], ["profile", "truncated", *PROFILE_ARGS]],
    ids=["export --out .", "profile truncated"],
)
def test_bad_input_in_a_real_process(workspace, argv):
    """The same contract for a whole process: nothing at import time or exit adds to stderr."""
    before = tree_digest(workspace)
    env = {"PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(workspace.parent)}
    done = subprocess.run([sys.executable, "-m", "superexperts", *argv], cwd=workspace, env=env,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert len(shown_lines(done.stderr)) == 1 and "Traceback" not in done.stderr, done.stderr
    assert tree_digest(workspace) == before


def test_overwrite_leaves_only_the_new_run(workspace):
    assert main(["profile", "other", "--out", "sinksrun", "--overwrite", *PROFILE_ARGS]) == 0
    fresh_run = {p.name for p in (workspace / "run").iterdir()}  # what a profile run holds
    assert {p.name for p in (workspace / "sinksrun").iterdir()} == fresh_run
