"""Helpers of the report tests: a hand-built profile (no model, every value chosen on purpose),
optional run files with hostile names, and a parser that reads the page back.

A 12-layer model with a dense layer 0, 64 routed experts and one shared expert per MoE layer.
Three planted Super Experts (L2 E5, L3 shared, L4 E9) write into channel 17 at the first token;
the hidden state's top-1 rises at each of them. Token texts are hostile HTML on purpose.
"""

from __future__ import annotations

from html.parser import HTMLParser

import numpy as np
import pandas as pd

from superexperts.capture.profile import ATOM_COLUMNS, EXPERT_COLUMNS, Profile, flag_massive

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


HOSTILE_NAME = "<img src=x onerror=alert(1)> $x$"


def write_optional_files(run, prof) -> None:
    """sensitivity.json from the real grid; prune_eval.json and sinks.json by hand, hostile names."""
    from superexperts.identify.sensitivity import sensitivity, sensitivity_json
    from superexperts.runs.runfolder import atomic_write_json

    atomic_write_json(
        run / "sensitivity.json", sensitivity_json(sensitivity(prof.expert_stats, prof.num_layers))
    )
    conditions = [
        {"name": "original", "experts": [], "mode": "zero", "perplexity": 8.7,
         "tasks": {"arc_easy": {"acc": 0.8}}, "generations": [{"prompt": "Hi", "text": HOSTILE}]},
        {"name": HOSTILE_NAME, "experts": [{"layer": 2, "expert": 5}], "mode": "zero", "perplexity": 95.0,
         "tasks": {"arc_easy": {"acc": 0.3}}},
    ]  # fmt: skip
    atomic_write_json(run / "prune_eval.json", {"conditions": conditions})
    sinks = [{"name": "original", "experts": [], "sink_mass": [0.1, 0.5, 0.8], "sink_rate": 0.6},
             {"name": HOSTILE_NAME, "experts": [{"layer": 2, "expert": 5}], "sink_mass": [0.1, 0.05, 0.02],
              "sink_rate": 0.0, "d_sink": [0.0, 0.9, 0.97]}]  # fmt: skip
    atomic_write_json(run / "sinks.json", {"conditions": sinks, "epsilon": 0.3})


class PageParser(HTMLParser):
    """Collects start tags with attributes and, per <section id>, its tables as rows of cell text."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.highlighted: dict[str, list[bool]] = {}
        self.section, self.cell = None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "section":
            self.section = attrs.get("id")
        elif tag == "tr" and self.section:
            self.tables.setdefault(self.section, []).append([])
            self.highlighted.setdefault(self.section, []).append(attrs.get("class") == "hl")
        elif tag in ("td", "th") and self.section:
            self.cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            self.tables[self.section][-1].append("".join(self.cell).strip())
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def parse_page(text: str) -> PageParser:
    parser = PageParser()
    parser.feed(text)
    return parser


WIDTH = 8
# (layer, kind, expert) -> contributions of atoms 0..7 at the SE's maximum
CONTRIBUTIONS = {
    (2, "routed", 5): [0.0, 0.1, 0.0, 60.0, 0.0, 0.0, -0.1, 0.0],  # atom 3 alone: 1 super atom
    (3, "shared", -1): [10.0, 10.0, 10.0, 10.0, 0.0, 0.0, 0.0, 0.0],  # four equal atoms: 4 needed
    # (4, "routed", 9) has no atom rows: the section leaves it out
}


def atom_table() -> pd.DataFrame:
    """Atom rows of two of the planted SEs (L2 E5: one super atom; L3 shared: four equal atoms)."""
    rows = []
    for (layer, kind, expert), values in CONTRIBUTIONS.items():
        for k, c in enumerate(values):
            rows.append({"layer": layer, "expert": expert, "kind": kind, "atom": k, "camera_sum": 1.0,
                         "camera_max": 1.0, "max_abs_act": abs(c), "max_act_sample": 0, "max_act_position": 0,
                         "contribution": c})  # fmt: skip
    return pd.DataFrame(rows, columns=ATOM_COLUMNS)
