"""`--prefetch on|off` (profile, sinks, prune-eval with --stream): reading the next layer in a background
thread, forced on the CPU here, gives the numbers of inline reads; the choice is recorded; without
--stream the flag is refused."""

from __future__ import annotations

import json

import pytest

from superexperts.cli import main
from superexperts.models.demo import heldout_path

RUNS = {  # subcommand: (flags, output file, where the output records the prefetch, the numbers compared)
    "profile": (["--samples", "2", "--seq-len", "32", "--no-report"], "profile.json",
                lambda d: d["meta"]["prefetch"], lambda d: (d["expert_stats"], d["layer_stats"])),
    "sinks": (["--experts", "1:13", "--random", "0", "--samples", "1", "--seq-len", "32"], "sinks.json",
              lambda d: d["prefetch"], lambda d: d["conditions"]),
    "prune-eval": (["--experts", "1:13,2:41", "--ppl", str(heldout_path()), "--seq-len", "32", "--max-windows", "2"],
                   "prune_eval.json", lambda d: d["prefetch"],
                   lambda d: [(c["name"], c["perplexity"]) for c in d["conditions"]]),
}  # fmt: skip


@pytest.mark.parametrize("cmd", list(RUNS))
def test_prefetch_on_gives_the_inline_numbers(demo_dir, tmp_path, cmd):
    flags, name, recorded, numbers = RUNS[cmd]
    docs = {}
    for choice in ("off", "on"):
        out = tmp_path / choice
        assert main([cmd, str(demo_dir), *flags, "--dtype", "float32", "--stream", "--prefetch", choice,
                     "--out", str(out)]) == 0  # fmt: skip
        docs[choice] = json.loads((out / name).read_text())
    assert numbers(docs["on"]) == numbers(docs["off"])
    assert recorded(docs["on"]) is True and recorded(docs["off"]) is False


@pytest.mark.parametrize("cmd", list(RUNS))
def test_prefetch_without_stream_is_refused(demo_dir, tmp_path, capsys, cmd):
    flags, name, _, _ = RUNS[cmd]
    out = tmp_path / "out"
    assert main([cmd, str(demo_dir), *flags, "--prefetch", "on", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--prefetch only applies with --stream" in err and len(err.splitlines()) == 1
    assert not (out / name).exists()
