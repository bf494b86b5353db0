"""Hand-built profiles for the report tests: no model, every value chosen on purpose.

A 12-layer model with a dense layer 0, 64 routed experts and one shared expert per MoE layer.
Three planted Super Experts (L2 E5, L3 shared, L4 E9) write into channel 17 at the first token;
the hidden state's top-1 rises at each of them. Token texts are hostile HTML on purpose.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from superexperts.profile import EXPERT_COLUMNS, Profile
from superexperts.rules import flag_massive, paper
from superexperts.run import save_run

HOSTILE = "<script>alert(1)</script>"
QUOTES = "\"&<>'"
NUM_LAYERS, NUM_EXPERTS, CHANNEL = 12, 64, 17
PLANTED = {(2, "routed", 5): 700.0, (3, "shared", -1): 500.0, (4, "routed", 9): 400.0}


def _expert_rows(rng: np.random.Generator) -> list[dict]:
    rows = []
    for layer in range(NUM_LAYERS):
        keys = [(layer, "dense", -1)] if layer == 0 else [(layer, "routed", e) for e in range(NUM_EXPERTS)]
        keys += [(layer, "shared", -1)] if layer else []
        for key in keys:
            value = PLANTED.get(key, float(rng.lognormal(1.0, 0.8)))
            planted = key in PLANTED
            rows.append({
                "layer": layer, "expert": key[2], "kind": key[1], "max_abs_output": value,
                "max_output": -value,
                "channel": CHANNEL if planted else int(rng.integers(0, 32)), "sample": 0,
                "position": 0 if planted else int(rng.integers(1, 16)), "token_id": 7,
                "token_text": HOSTILE if planted else QUOTES, "max_abs_input": 1.0, "tokens_routed": 5,
                "nonfinite_rows": 0,
            })  # fmt: skip
    rows[3]["max_abs_output"] = 0.0  # an expert that saw no token
    return rows


def _layer_rows() -> pd.DataFrame:
    rows, top = [], 8.0
    for layer in range(NUM_LAYERS):
        top += sum(v for (lay, _, _), v in PLANTED.items() if lay == layer)
        row = {"layer": layer, "median_abs": 0.4, "nonfinite": 0}
        for k, value in enumerate((top, 6.0 + layer * 0.1, 5.0), start=1):
            row |= {f"top{k}_abs": value, f"top{k}_channel": CHANNEL if k == 1 else k, f"top{k}_sample": 0,
                    f"top{k}_position": 0, f"top{k}_token_text": HOSTILE}  # fmt: skip
        rows.append(row)
    table = pd.DataFrame(rows)
    table["massive"] = flag_massive(table)
    return table


def make_profile(seed: int = 0, **meta) -> Profile:
    rng = np.random.default_rng(seed)
    experts = pd.DataFrame(_expert_rows(rng), columns=EXPERT_COLUMNS)
    info = {"num_layers": NUM_LAYERS, "model_type": "qwen3_moe", "name_or_path": f"hand/{HOSTILE}",
            "moe_layers": list(range(1, NUM_LAYERS)), "dense_layers": [0], "num_experts": NUM_EXPERTS,
            "device": "cpu", "dtype": "float32", "seed": 0, "profile_seconds": 1.5} | meta  # fmt: skip
    return Profile(experts, _layer_rows(), info)


@pytest.fixture
def hand_profile() -> Profile:
    return make_profile()


@pytest.fixture
def hand_verdict(hand_profile):
    return paper(hand_profile.expert_stats, hand_profile.num_layers)


@pytest.fixture
def hand_run(tmp_path, hand_profile, hand_verdict):
    """A run folder as `profile` writes it."""
    out = tmp_path / "run"
    save_run(out, hand_profile, hand_verdict)
    return out
