"""When a sink metric means nothing on the input, and what to try: one place for the console,
sinks.json and the report, so all three say the same.

    >>> d_sink_caveat(0.0, 0.3)["metric"]
    'd_sink'
    >>> d_sink_caveat(0.6, 0.3) is None
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

Caveat = dict[str, str]  # {"metric", "reason", "try"}


def d_sink_caveat(sink_rate: Any, epsilon: float) -> Caveat | None:
    """D_sink (paper Eq. 7) is the share of the original model's sink attention that pruning removes:
    with no first-token sink in the original there is nothing to remove, and the ratio of two tiny
    attention masses swings anywhere (values far below 0 appear)."""
    try:
        rate = float(sink_rate)
    except (TypeError, ValueError):
        rate = float("nan")
    if not (math.isnan(rate) or rate == 0.0):
        return None
    return {
        "metric": "d_sink",
        "reason": f"the original model has no first-token sink on this input: no head puts more than "
        f"{epsilon} of its attention on token 0 (sink rate {rate}), so D_sink is not meaningful",
        "try": "longer inputs (sinks form over hundreds of tokens), text that starts with the model's "
        "BOS token, or check the model",
    }


def router_caveats(router: pd.DataFrame) -> list[Caveat]:
    """Router-view columns that are empty on this input, with the reason."""
    notes: list[Caveat] = []
    idle = [f"{r.layer}:{r.expert}" for r in router.itertuples() if r.fire_position < 0]
    if idle:
        notes.append(
            {
                "metric": "router fire_*",
                "reason": f"{', '.join(idle)} got no token on this input, so it fires nowhere here",
                "try": "more or longer windows (--samples, --seq-len), or the text it fired on when profiled",
            }
        )
    if len(router) and router["sink_selected"].isna().all():
        notes.append(
            {
                "metric": "router *_selected",
                "reason": "this router returns no top-k choice (it scores every expert), so 'selected' is "
                "not defined",
                "try": "read the score columns",
            }
        )
    return notes


def caveat_text(caveat: Caveat) -> str:
    return f"{caveat['metric']}: {caveat['reason']}; try {caveat['try']}."


def meaningless(caveats: Sequence[Caveat], metric: str) -> Caveat | None:
    """The caveat of `metric`, if any."""
    return next((c for c in caveats if c.get("metric") == metric), None)
