"""The whole chain on one page: sink metrics, D_sink, layer-wise chain, attention maps, router view.

    >>> study = sinks_study(model, ids, super_experts=[(1, 68), (2, 92)], controls={"random-0": [(5, 3), (9, 7)]},
    ...                     map_layers=[4], map_heads=[0], tokens=tok.convert_ids_to_tokens(ids[0]))
    >>> io.write_files("runs/sinks", study_files(study, meta))
"""

from __future__ import annotations

import io as _io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn

from ...models.experts import Expert
from ...runs.runfolder import json_bytes
from . import metrics
from .caveats import caveat_text, d_sink_caveat, meaningless, router_caveats
from .chain import layerwise_conditions, plot_chain, plot_d_sink
from .maps import attention_maps, plot_maps
from .measure import SinkResult, measure_sinks, result_json
from .router import COLUMNS, router_view

MAP_TOKENS = 32  # default length of the attention-map input (maps are T x T)


# What --stream leaves out, said in sinks.json, on the console and in `sinks --help`.
ROUTER_NOT_STREAMED = ("router view: not measured with --stream (it reads every SE layer's router and expert "
                       "outputs in one forward); run sinks without --stream, or with --device-map auto, for it")


@dataclass
class SinkStudy:
    result: SinkResult
    router: pd.DataFrame | None  # None: not measured (--stream)
    figures: dict[str, Figure]
    warnings: list[str] = field(default_factory=list)
    caveats: list[dict[str, str]] = field(default_factory=list)  # {"metric", "reason", "try"}, see caveats.py
    not_measured: list[str] = field(default_factory=list)  # parts of the study skipped, and why


def sink_warnings(result: SinkResult) -> list[str]:
    """Plain-language caveats: no first-token sink in the original model, so D_sink means nothing."""
    caveat = d_sink_caveat(result["original"].sink_rate(result.epsilon), result.epsilon)
    return [caveat_text(caveat)] if caveat else []


def sinks_study(model: nn.Module, input_ids: torch.Tensor, *, super_experts: Sequence[Expert],
                controls: Mapping[str, list[Expert]], map_layers: Sequence[int], map_heads: Sequence[int],
                tokens: Sequence[str] | None = None, sink_keys: Sequence[int] = (0,), top_k: int | None = None,
                mode: str = "zero", epsilon: float = metrics.EPSILON, tokenizer=None) -> SinkStudy:
    """Run every condition: the original, the SEs layer by layer then all, and each control.
    `tokenizer` (optional) names the token where each SE fires in the router view."""
    conditions = layerwise_conditions(list(super_experts)) | dict(controls)
    result = measure_sinks(model, input_ids, conditions, sink_keys=sink_keys, top_k=top_k, mode=mode,
                           epsilon=epsilon)
    map_ids = input_ids[:1, :MAP_TOKENS]
    maps = attention_maps(model, map_ids, map_layers, {"super": list(super_experts)}, mode=mode)
    router = router_view(model, input_ids, list(super_experts), tokenizer=tokenizer)
    return assemble_study(result, maps, router, super_experts=super_experts, map_layers=map_layers,
                          map_heads=map_heads, tokens=tokens)  # fmt: skip


def assemble_study(result: SinkResult, maps, router: pd.DataFrame | None, *, super_experts: Sequence[Expert],
                   map_layers: Sequence[int], map_heads: Sequence[int], tokens: Sequence[str] | None,
                   not_measured: Sequence[str] = ()) -> SinkStudy:  # fmt: skip
    """Caveats and figures around measured results (in memory or streamed alike)."""
    chain_names = ["original", *layerwise_conditions(list(super_experts))]
    d_sink_note = d_sink_caveat(result["original"].sink_rate(result.epsilon), result.epsilon)
    caveats = ([d_sink_note] if d_sink_note else []) + (router_caveats(router) if router is not None else [])
    figures = {
        "sinks_chain": plot_chain(result, chain_names),
        "sinks_d_sink": plot_d_sink(result, note=d_sink_note["reason"] if d_sink_note else None),
        "sinks_maps": plot_maps(maps, map_layers, map_heads, None if tokens is None else tokens[:MAP_TOKENS]),
    }
    warnings = [caveat_text(c) for c in caveats]
    return SinkStudy(result=result, router=router, figures=figures, warnings=warnings, caveats=caveats,
                     not_measured=list(not_measured))


def _figure_writer(fig: Figure, fmt: str) -> Callable:
    return lambda path: fig.savefig(path, format=fmt, dpi=150)


def study_files(study: SinkStudy, meta: dict[str, Any]) -> dict[str, Any]:
    """sinks.json, router.csv and each figure as PNG and SVG, for `io.write_files` (all-or-nothing)."""
    router = None if study.router is None else study.router.to_dict(orient="records")
    body = result_json(study.result) | {"router": router, "warnings": study.warnings,
                                        "caveats": study.caveats, "not_measured": study.not_measured} | meta
    d_sink_note = meaningless(study.caveats, "d_sink")
    for condition in body["conditions"]:  # the flag sits next to the numbers it qualifies
        if "d_sink" in condition:
            condition["d_sink_meaningful"] = d_sink_note is None
            if d_sink_note is not None:
                condition["d_sink_note"] = d_sink_note["reason"]
    csv = _io.StringIO()  # header only when not measured: it replaces an earlier run's table in --out
    (pd.DataFrame(columns=COLUMNS) if study.router is None else study.router).to_csv(csv, index=False)
    files: dict[str, Any] = {"sinks.json": json_bytes(body), "sinks_router.csv": csv.getvalue().encode()}
    for name, fig in study.figures.items():
        for fmt in ("png", "svg"):
            files[f"{name}.{fmt}"] = _figure_writer(fig, fmt)
    return files


def summary_lines(study: SinkStudy) -> list[str]:
    """A few lines for the terminal: sink mass, sink rate and mean D_sink per condition."""
    lines = []
    meaningful = meaningless(study.caveats, "d_sink") is None
    for c in study.result.conditions:
        mass = ", ".join(f"{v:.2f}" for v in c.sink_mass)
        line = f"{c.name:>18}: sink rate {c.sink_rate(study.result.epsilon):.2f}; sink mass per layer [{mass}]"
        if c.d_sink is not None:
            line += f"; mean D_sink {metrics.mean_or_nan(c.d_sink):.2f}" if meaningful else \
                "; mean D_sink n/a (not meaningful: see WARNING)"  # fmt: skip
        lines.append(line)
    original = study.result["original"]
    for name, per_layer in original.norms.items():  # the paper's mechanism: the sink token's q/k/v are small
        ratios = ", ".join(f"{sink / other:.2f}" if other else "nan" for sink, other in per_layer)
        lines.append(f"original |{name}| at sink / mean of other tokens, per layer: [{ratios}]")
    for r in study.router.itertuples() if study.router is not None else ():
        fires = "fires nowhere here; " if r.fire_position < 0 else (
            f"fires at sample {r.fire_sample} position {r.fire_position} {r.fire_token!r} (output "
            f"{r.fire_output:.3g}): score {r.fire_score:.3g}; ")  # fmt: skip
        lines.append(f"router L{r.layer}/E{r.expert} ({r.scoring}): {fires}score at first token "
                     f"{r.sink_score:.3g}, other tokens mean {r.other_mean:.3g}, max {r.other_max:.3g}")
    return lines + [f"not measured: {n}" for n in study.not_measured] + [f"WARNING: {w}" for w in study.warnings]
