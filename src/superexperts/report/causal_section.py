"""The report's causal-check section, from prune_eval.json `causal` (written by `prune-eval --causal`).

The verdict table (one row per candidate) sits next to the layers x candidates figure; a folded
table gives every layer's numbers. A file written before the per-layer check shows its old
columns with a note saying why they can mislead.
"""

from __future__ import annotations

from typing import Any

from ..evaluate.ablate.causal import layer_span
from . import texts
from .causal_figures import fig_causal
from .inputs import ReportInputs
from .page import Raw, Section, check, esc, figure, number, paragraphs, table

TITLE = "Causal check: which candidates make the massive activation"


def _candidates(causal: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in causal.get("candidates") or [] if isinstance(c, dict)]


def _is_se(inputs: ReportInputs, c: dict[str, Any]) -> bool:
    return (c.get("layer"), c.get("expert")) in set(inputs.verdict.experts)


def _verdict(c: dict[str, Any]) -> Raw:
    if c.get("meaningful") is False:
        return Raw(f'<span class="warn">not meaningful</span>: {esc(c.get("reason", ""))}')
    return Raw(f"{check(bool(c.get('causal')))} {esc(c.get('reason', ''))}")


def _percent(value: Any) -> str:
    return f"{-float(value):+.0%}" if isinstance(value, (int, float)) else ""  # a drop of 62% -> "-62%"


def _profile_channel(inputs: ReportInputs, c: dict[str, Any]) -> Any:
    """The down_proj output channel of the candidate's largest value, from profile.json: the channel the
    rest of the page names. The causal check measures the hidden channel its ablation moves most, which
    can differ (a candidate that writes no massive activation)."""
    table_ = inputs.profile.expert_stats
    hit = table_[(table_["layer"] == c.get("layer")) & (table_["expert"].astype(str) == str(c.get("expert")))]
    return "" if hit.empty else int(hit["channel"].iloc[0])


def _verdict_table(inputs: ReportInputs, candidates: list[dict[str, Any]]) -> Raw:
    rows = []
    for c in candidates:
        before, after = number(c.get("own_original")), number(c.get("own_ablated"))
        own = "" if c.get("channel") is None else f"{before} -> {after} ({_percent(c.get('own_drop'))})"
        layers = c.get("causal_layers") or []
        rows.append(
            [
                c.get("rank", ""),
                f"{c.get('layer')}:{c.get('expert')}",
                check(_is_se(inputs, c)),
                _profile_channel(inputs, c),
                "" if c.get("channel") is None else c.get("channel"),
                own,
                number(c.get("removed")),
                layer_span(layers) if layers else "none",
                number(c.get("loss_delta")),
                _verdict(c),
            ]
        )
    columns = [
        "rank",
        "candidate",
        "Super Expert (this run)",
        "channel of its largest output (profile)",
        "hidden channel measured here",
        "peak |h| at its layer: original -> ablated (drop)",
        "removed",
        "causal layers",
        "loss change",
        "causal",
    ]
    return table(columns, rows, highlight=[bool(c.get("causal")) for c in candidates])


def _per_layer_table(candidates: list[dict[str, Any]]) -> Raw:
    """Folded: every layer's peak in each candidate's channel (original -> ablated) and max |h|."""
    measured = [c for c in candidates if isinstance(c.get("channel_original"), list)]
    if not measured:
        return Raw("")
    maxima = measured[0].get("max_original") or []
    rows = []
    for layer in range(len(measured[0]["channel_original"])):
        cells: list[Any] = [layer, number(maxima[layer]) if layer < len(maxima) else ""]
        for c in measured:
            before, after = c["channel_original"][layer], c["channel_ablated"][layer]
            cells.append(f"{number(before)} -> {number(after)}")
        rows.append(cells)
    columns = ["layer", "max |h| (original)"] + [
        f"{c['layer']}:{c['expert']} ch {c['channel']}" for c in measured
    ]
    return Raw(
        "<details><summary>every layer: peak |h| in each candidate's channel, original -> ablated"
        f"</summary>{table(columns, rows)}</details>"
    )


def _legacy_table(candidates: list[dict[str, Any]]) -> Raw:
    rows = [
        [
            c.get("rank", ""),
            f"{c.get('layer')}:{c.get('expert')}",
            number(c.get("ma_original")),
            number(c.get("ma_ablated")),
            number(c.get("ma_drop"), 3),
            number(c.get("loss_delta")),
            check(bool(c.get("causal"))),
        ]
        for c in candidates
    ]
    columns = [
        "rank",
        "candidate",
        "max |h| from its layer on",
        "ablated",
        "drop",
        "loss change",
        "causal (old)",
    ]
    return Raw(f'<p class="warn">{esc(texts.CAUSAL_LEGACY)}</p>' + table(columns, rows))


def causal(inputs: ReportInputs) -> Section | None:
    data, error = inputs.optional("prune_eval.json")
    if error:  # the pruning section shows the error; nothing to add here
        return None
    block = data.get("causal") if isinstance(data, dict) else None
    if not isinstance(block, dict):
        return None
    candidates = _candidates(block)
    intro = paragraphs(texts.CAUSAL, str(block.get("definition", "")))
    notes = Raw("".join(f'<p class="warn">{esc(n)}</p>' for n in block.get("caveats") or []))
    if not any("channel_drop" in c for c in candidates):
        return Section("causal", TITLE, Raw(intro + _legacy_table(candidates)))
    html, files = figure(
        fig_causal(candidates),
        "causal",
        texts.CAPTIONS["causal"],
        "Per-layer drop of each candidate's activation",
    )
    body = intro + notes + _verdict_table(inputs, candidates) + html + _per_layer_table(candidates)
    return Section("causal", TITLE, Raw(body), files)
