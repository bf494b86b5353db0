"""Parts of the report's sinks section: the caveats (which numbers mean nothing on this input) and
the router view at the tokens where each Super Expert fires.

sinks.json written before caveats existed has none stored: the D_sink caveat is then derived from
the original model's sink rate with the same function the `sinks` command uses.
"""

from __future__ import annotations

import math
from typing import Any

from ..evaluate.sinks.caveats import Caveat, caveat_text, d_sink_caveat
from .page import Raw, esc, number, table, token


def sink_caveats(data: dict[str, Any]) -> list[Caveat]:
    stored = data.get("caveats")
    if isinstance(stored, list):
        return [c for c in stored if isinstance(c, dict) and {"metric", "reason", "try"} <= c.keys()]
    original = next(
        (c for c in data.get("conditions") or [] if isinstance(c, dict) and c.get("name") == "original"), None
    )
    caveat = d_sink_caveat(original.get("sink_rate"), data.get("epsilon", 0.3)) if original else None
    return [caveat] if caveat else []


def caveat_notes(caveats: list[Caveat]) -> Raw:
    return Raw("".join(f'<p class="warn">Not meaningful here - {esc(caveat_text(c))}</p>' for c in caveats))


def _value(value: Any, digits: int = 4) -> str:
    """A number, or 'n/a' for a missing / NaN one (a caveat above says why)."""
    try:
        return "n/a" if value is None or math.isnan(float(value)) else number(value, digits)
    except (TypeError, ValueError):
        return str(value)


def _fires_at(r: dict[str, Any]) -> Any:
    position = r.get("fire_position")
    if not isinstance(position, int) or position < 0:
        return "nowhere on this input"
    return Raw(
        f"sample {esc(r.get('fire_sample'))}, position {esc(position)}: {token(r.get('fire_token', ''))}"
    )


ROUTER_COLUMNS = [
    "Super Expert",
    "scoring",
    "fires at (largest output on this input)",
    "its output there",
    "router score there",
    "selected there",
    "score at first token",
    "selected at first token",
    "score at the other tokens: mean / max",
]


def router_table(data: dict[str, Any]) -> Raw:
    """One row per SE: where it fires, the router's score there and at the first token (paper App. F)."""
    records = [r for r in data.get("router") or [] if isinstance(r, dict)]
    if not records:  # sinks --stream skips the router view and says why in `not_measured`
        skipped = [n for n in data.get("not_measured") or [] if isinstance(n, str) and n.startswith("router view")]
        return Raw("".join(f"<h3>Router view</h3><p>{esc(n)}</p>" for n in skipped[:1]))
    rows = [
        [
            f"{r.get('layer')}:{r.get('expert')}",
            r.get("scoring", ""),
            _fires_at(r),
            _value(r.get("fire_output")),
            _value(r.get("fire_score"), 3),
            _value(r.get("fire_selected"), 2),
            _value(r.get("sink_score"), 3),
            _value(r.get("sink_selected"), 2),
            f"{_value(r.get('other_mean'), 3)} / {_value(r.get('other_max'), 3)}",
        ]
        for r in records
    ]
    intro = (
        "<h3>Router view: where each Super Expert fires</h3><p>The router's probability for the expert "
        "at the token where its output is largest on this input, at the first token, and at all other "
        "tokens. The paper finds an exceptionally large score where the SE fires and a small one "
        "elsewhere.</p>"
    )
    return Raw(intro + table(ROUTER_COLUMNS, rows))
