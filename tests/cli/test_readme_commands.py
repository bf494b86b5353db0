"""Every `superexperts ...` command the README shows parses with the real CLI (flags exist, values
type-check). The demo tour itself is run end to end by tests/models/test_demo_study.py and `make demo`."""

import re
import shlex
from pathlib import Path

import pytest

from superexperts.cli import build_parser

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_commands() -> list[str]:
    """Commands in fenced bash blocks and in `backticks` that start with superexperts (continuations joined)."""
    text = README.read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            line = re.sub(r"^\.venv/bin/", "", line)
            if line.startswith("superexperts "):
                commands.append(line)
    commands += re.findall(r"`(superexperts (?:profile|prune-eval|sinks|quant-eval|report|identify|compare|"
                           r"export|protect|audit|plan|known) [^`]+)`", text)  # inline, with arguments
    return commands


def test_readme_has_commands():
    assert len(readme_commands()) >= 15


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_parses(command, capsys):
    argv = shlex.split(command)[1:]
    argv = [a for a in argv if "..." not in a]
    if any(re.fullmatch(r"[A-Z_|]+", a) or "..." in command for a in argv):  # a usage line with placeholders (RUN_DIR, MODEL)
        pytest.skip("usage line with placeholders")
    args = build_parser().parse_args(argv)
    assert callable(args.run)
    # The README shows the one current spelling: no deprecated flag (their note), no positional run folder.
    assert "deprecated" not in capsys.readouterr().err
    assert args.command not in ("identify", "report") or args.run_dir is None
    assert not (args.command == "protect" and (args.source or "").startswith("runs/"))
