"""What a section's numbers rest on: the data, protocol and window count, the command line, and
whether a difference is larger than the random controls' own spread (else it is noise).

>>> change_note(11.57, original=11.60, spread={"min": 11.55, "max": 11.66, "n": 3})
'inside the random-control spread: noise'
"""

from __future__ import annotations

import shlex
from typing import Any

from .page import Raw, esc, number

PROTOCOLS = {"bos-windows": "windows that each start with BOS"}


def _windows(ppl: dict[str, Any]) -> str:
    tokens, seq_len, cap = ppl.get("tokens"), ppl.get("seq_len"), ppl.get("max_windows")
    if not isinstance(tokens, int) or not isinstance(seq_len, int) or seq_len <= 0:
        return ""
    windows = tokens // seq_len if cap is None else min(cap, tokens // seq_len)
    return f"{windows} window(s) of {seq_len} tokens"


def perplexity_basis(ppl: Any) -> str:
    """'perplexity on demo-heldout (windows that each start with BOS): 12 window(s) of 64 tokens'."""
    if not isinstance(ppl, dict):
        return "no perplexity measured"
    protocol = ppl.get("protocol")
    how = f" ({PROTOCOLS.get(protocol, protocol)})" if protocol else ""
    windows = _windows(ppl)
    return f"perplexity on {ppl.get('spec', '?')}{how}" + (f": {windows}" if windows else "")


def command_text(data: dict[str, Any]) -> str:
    argv = data.get("command_line")
    if isinstance(argv, list) and all(isinstance(a, str) for a in argv):
        return shlex.join(argv)
    return str(data.get("command", ""))


def rests_on(data: dict[str, Any], *extra: str) -> Raw:
    """One note under a section's title: the data and protocol of its numbers and the command that made them."""
    parts = [*extra]
    block = data.get("data")
    if isinstance(block, dict):
        parts.insert(0, perplexity_basis(block.get("perplexity")))
        calib = block.get("calibration")
        if isinstance(calib, dict) and calib.get("spec"):
            parts.append(f"calibration windows: {calib.get('samples', '?')} x {calib.get('seq_len', '?')} tokens of "
                         f"{calib['spec']}")  # fmt: skip
    text = "; ".join(p for p in parts if p)
    command = command_text(data)
    line = f"<code>{esc(command)}</code>" if command else ""
    return Raw(f'<p class="note">Rests on: {esc(text)}.{" Made by " + line if line else ""}</p>')


def ratio(value: Any, original: Any) -> str:
    try:
        return f"{float(value) / float(original):.3g}x"
    except (TypeError, ValueError, ZeroDivisionError):
        return ""


def change_note(value: Any, *, original: Any, spread: Any) -> str:
    """How a condition's perplexity compares with the random controls' spread (min - max over seeds):
    inside it, or a change from the original no larger than it, is noise."""
    if not isinstance(spread, dict) or not isinstance(spread.get("n"), int) or spread["n"] < 2:
        return "no spread (fewer than 2 random seeds): not judged"
    try:
        v, o, lo, hi = float(value), float(original), float(spread["min"]), float(spread["max"])
    except (KeyError, TypeError, ValueError):
        return ""
    if lo <= v <= hi:
        return "inside the random-control spread: noise"
    if abs(v - o) <= hi - lo:
        return f"change from the original ({number(v - o, 3)}) within the control spread ({number(hi - lo, 3)}): noise"
    return f"{'above' if v > hi else 'below'} the random-control spread: a real difference"
