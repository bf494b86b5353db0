"""The report's sections: small builder functions `(ReportInputs) -> Section | None`.

`superexperts.report.SECTIONS` is the page in order. Another module adds a part of the page by
writing a builder and inserting it, e.g.
`SECTIONS.insert(SECTIONS.index(sections.massive_table), my_section)`; a builder returns None when
it has nothing to show (its input file is absent).
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from typing import Any

import pandas as pd

from ..identify import known
from . import texts
from .figures import THRESHOLDS, expert_name, fig_distribution, fig_expert_lines, fig_heatmap, fig_massive
from .inputs import ReportInputs
from .page import Raw, Section, check, esc, figure, number, paragraphs, table, token

SectionBuilder = Callable[[ReportInputs], "Section | None"]
TOP_CANDIDATES = 10


def synthetic_banner(inputs: ReportInputs) -> Section | None:
    if inputs.profile.meta.get("synthetic") is not True:
        return None
    return Section("synthetic", "", Raw(f'<div class="banner">{esc(texts.SYNTHETIC_BANNER)}</div>'))


def rule_text(criterion: dict[str, Any]) -> str:
    """The criterion in words, with its numbers."""
    name = criterion.get("name")
    if {"percentile_value", "max_fraction_value"} <= criterion.keys():
        p, f = number(criterion.get("percentile")), number(criterion.get("max_fraction"))
        return (
            f"an expert is a Super Expert when a[l,e] is above both the {p}th percentile of all a[l,e] "
            f"(= {number(criterion['percentile_value'])}) and {f} x the largest a[l,e] "
            f"(= {number(criterion['max_fraction_value'])}); rule '{name}'"
        )
    params = ", ".join(f"{k}={v}" for k, v in criterion.items() if k not in ("name", "layers_judged"))
    return f"rule '{name}' ({params})"


def judged_text(criterion: dict[str, Any]) -> str:
    layers = criterion.get("layers_judged") or []
    if not layers:
        return ""
    contiguous = layers == list(range(min(layers), max(layers) + 1))
    span = f"{min(layers)}-{max(layers)}" if contiguous else str(layers)
    return f" Only layers {span} are judged (the layers that build the massive activation)."


def intro(inputs: ReportInputs) -> Section:
    criterion = inputs.verdict.criterion
    fields = {"rule": rule_text(criterion), "judged": judged_text(criterion)}
    return Section("intro", "What this page shows", paragraphs(*(t.format(**fields) for t in texts.INTRO)))


def _se_phrase(r: Any) -> str:
    text = json.dumps(str(r.token_text), ensure_ascii=False)
    return (
        f"{expert_name(r.layer, r.kind, r.expert)} (a = {number(r.max_abs_output)}, "
        f"channel {int(r.channel)}, token {text} at position {int(r.position)})"
    )


def _massive_phrase(layers: pd.DataFrame) -> str:
    if "massive" not in layers or not layers["massive"].astype(bool).any():
        return "No layer's hidden state holds a massive activation (> 100 and > 1000 x the median)."
    hit = layers[layers["massive"].astype(bool)]
    channels = ", ".join(str(int(c)) for c in hit["top1_channel"].value_counts().index[:3])
    return (
        f"The hidden state holds a massive activation (> 100 and > 1000 x its median) after {len(hit)} "
        f"of {len(layers)} layers, first after layer {int(hit['layer'].min())}, in channel {channels}."
    )


def _known_phrase(agreement: Any) -> list[str]:
    """Whether the run found the SEs the paper published for this model (when it is a known model)."""
    if not isinstance(agreement, dict):
        return []
    try:
        return [f"Compared with the paper: this run {known.agreement_line(agreement)}."]
    except (KeyError, TypeError, AttributeError, ValueError):  # an agreement record of another version
        return []


def answer(inputs: ReportInputs) -> Section:
    ses = inputs.verdict.super_experts
    if ses.empty:
        found = "No Super Expert found: no expert is above the thresholds; the candidates show the nearest."
    else:
        plural = "s" if len(ses) > 1 else ""
        found = f"Found {len(ses)} Super Expert{plural}: {'; '.join(map(_se_phrase, ses.itertuples()))}."
    known_line = _known_phrase(inputs.saved.get("known"))
    lines = paragraphs(found, *known_line, _massive_phrase(inputs.profile.layer_stats))
    notes = "".join(f'<p class="warn">{esc(n)}</p>' for n in inputs.notes)
    return Section("answer", "Answer", Raw(f'<div class="answer">{lines}</div>{notes}'))


META_FIELDS = (  # key, label; shown first when present, all keys under "all metadata"
    ("model", "model"), ("name_or_path", "model path"), ("revision", "revision"),
    ("model_type", "model type"), ("model_class", "model class"),
    ("num_layers", "layers"), ("num_experts", "experts per MoE layer"),
    ("num_experts_total", "experts in total"), ("dense_layers", "dense (non-MoE) layers"),
    ("has_shared_experts", "shared experts"), ("data.spec", "calibration data"),
    ("data.sampling", "sampling"), ("data.sha256", "data hash (sha256)"),
    ("data.seed", "data seed"), ("samples", "windows"), ("seq_len", "tokens per window"),
    ("tokens", "tokens"), ("batch_size", "batch size"), ("seed", "seed"), ("device", "device"),
    ("command_line", "command line"),
    ("dtype", "dtype"), ("profile_seconds", "profiling time (s)"), ("seconds", "time (s)"),
    ("timings", "timings"), ("tool_version", "superexperts version"), ("created_unix", "created (UTC)"),
)  # fmt: skip


def _meta_value(key: str, value: Any) -> str:
    if key == "command_line" and isinstance(value, list):
        return shlex.join(str(v) for v in value)
    if key == "created_unix" and isinstance(value, (int, float)):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(value))
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _flat(meta: dict[str, Any]) -> dict[str, Any]:
    """{"data": {"spec": ...}} -> {"data.spec": ...}, one level deep (the run's data record)."""
    flat = dict(meta)
    for key, value in meta.items():
        if isinstance(value, dict) and key != "versions":
            flat |= {f"{key}.{k}": v for k, v in value.items()}
    return flat


def metadata(inputs: ReportInputs) -> Section:
    meta = inputs.profile.meta
    flat = _flat(meta)
    rows = [[label, _meta_value(key, flat[key])] for key, label in META_FIELDS if flat.get(key) is not None]
    if isinstance(meta.get("versions"), dict):
        rows.append(["versions", ", ".join(f"{k} {v}" for k, v in meta["versions"].items())])
    full = esc(json.dumps(meta, indent=2, ensure_ascii=False, default=str))
    details = f"<details><summary>all metadata (JSON)</summary><pre>{full}</pre></details>"
    return Section("metadata", "Run", Raw(table(["field", "value"], rows) + details))


def _expert_cell(r: Any) -> str:
    return str(int(r.expert)) if r.kind == "routed" else str(r.kind)


SE_COLUMNS = ["layer", "expert", "a[l,e] = max |output|", "signed value", "channel", "token text",
              "token id", "sample", "position"]  # fmt: skip


def se_table(inputs: ReportInputs) -> Section:
    ses = inputs.verdict.super_experts
    if ses.empty:
        return Section("super-experts", "Super Experts", paragraphs("None found under this rule."))
    rows = [
        [int(r.layer), _expert_cell(r), number(r.max_abs_output), number(r.max_output), int(r.channel),
         token(r.token_text), int(r.token_id), int(r.sample), int(r.position)]
        for r in ses.itertuples()
    ]  # fmt: skip
    body = table(SE_COLUMNS, rows) + paragraphs(texts.SE_TABLE)
    return Section("super-experts", "Super Experts", Raw(body))


def thresholds(criterion: dict[str, Any]) -> list[tuple[str, float]]:
    """(column header, value) of every threshold the criterion reports."""
    found = []
    for key, label, _, _ in THRESHOLDS:
        value = criterion.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            name = label.split(" = ")[0].format(**{k: v for k, v in criterion.items() if k != "value"})
            found.append((f"> {name} (= {number(value)})", float(value)))
    return found


def _excluded_by_layer_rule(inputs: ReportInputs, pool: pd.DataFrame, limits: list[tuple[str, float]]) -> pd.DataFrame:
    """Experts outside the judged layers that pass every threshold: excluded by the layer rule alone."""
    table_ = inputs.profile.expert_stats
    judged = inputs.verdict.criterion.get("layers_judged")
    if not limits or not isinstance(judged, list) or not judged:
        return table_.iloc[:0]
    outside = table_[(table_["kind"] != "dense") & ~table_["layer"].isin(judged)]
    passing = outside[outside["max_abs_output"] > max(v for _, v in limits)]
    return passing.sort_values("max_abs_output", ascending=False)


def _unrouted(table_: pd.DataFrame) -> Raw:
    """How many routed experts no calibration token reached: their a[l,e] is unmeasured, not small."""
    if "tokens_routed" not in table_:
        return Raw("")
    routed = table_[table_["kind"] == "routed"]
    unrouted = int((pd.to_numeric(routed["tokens_routed"], errors="coerce").fillna(0) == 0).sum())
    return paragraphs(f"{unrouted} of {len(routed)} routed experts received no calibration token: their a[l,e] "
                      "is unmeasured (0 here), not small; more or other calibration data reaches them.")


def candidates(inputs: ReportInputs) -> Section:
    verdict = inputs.verdict
    pool = verdict.candidates if not verdict.candidates.empty else inputs.profile.expert_stats
    top = pool[pool["kind"] != "dense"].nlargest(TOP_CANDIDATES, "max_abs_output")
    ses = verdict.super_experts
    is_se = set(zip(ses["layer"], ses["kind"], ses["expert"]))
    limits = thresholds(verdict.criterion)
    rows, marks = [], []
    for rank, r in enumerate(top.itertuples(), start=1):
        se = (r.layer, r.kind, r.expert) in is_se
        cells = [rank, int(r.layer), _expert_cell(r), number(r.max_abs_output), int(r.channel),
                 token(r.token_text)]  # fmt: skip
        rows.append(cells + [check(r.max_abs_output > v) for _, v in limits] + [check(se)])
        marks.append(se)
    columns = ["rank", "layer", "expert", "a[l,e]", "channel", "token text"] + [h for h, _ in limits]
    for r in _excluded_by_layer_rule(inputs, pool, limits).itertuples():
        cells = ["-", int(r.layer), _expert_cell(r), number(r.max_abs_output), int(r.channel), token(r.token_text)]
        rows.append(cells + [check(True) for _ in limits] + [f"no: layer {int(r.layer)} is not judged (layer rule)"])
        marks.append(False)
    body = paragraphs(texts.CANDIDATES.format(count=len(top)))
    body += table(columns + ["Super Expert"], rows, highlight=marks)
    body += _unrouted(inputs.profile.expert_stats)
    return Section("candidates", "Top candidates against the thresholds", Raw(body))


def figures(inputs: ReportInputs) -> Section:
    prof, verdict = inputs.profile, inputs.verdict
    made = [
        ("heatmap", fig_heatmap(prof.expert_stats, verdict), "Heatmap of a[l,e], layers by experts"),
        ("experts", fig_expert_lines(prof.expert_stats, verdict), "Expert maxima across layers"),
        ("massive", fig_massive(prof.layer_stats, verdict), "Massive activations per layer"),
        ("distribution", fig_distribution(prof.expert_stats, verdict), "Histogram of a[l,e] with thresholds"),
    ]
    body, files = [], {}
    for name, fig, alt in made:
        html, written = figure(fig, name, texts.CAPTIONS[name], alt)
        body.append(f"<h3>{esc(alt)}</h3>{html}")
        files |= written
    return Section("figures", "Figures", Raw("".join(body)), files)


MASSIVE_COLUMNS = ["layer", "top-1 |h|", "channel", "token text", "sample:position", "top-2, top-3 |h|",
                   "median |h|", "top-1 / median", "massive"]  # fmt: skip


def _massive_row(r: Any) -> list[Any]:
    others = [
        f"{number(getattr(r, f'top{k}_abs'))} (ch {int(getattr(r, f'top{k}_channel'))})"
        for k in (2, 3)
        if pd.notna(getattr(r, f"top{k}_abs", None))
    ]
    ratio = r.top1_abs / r.median_abs if r.median_abs > 0 else float("inf")
    return [int(r.layer), number(r.top1_abs), int(r.top1_channel), token(r.top1_token_text),
            f"{int(r.top1_sample)}:{int(r.top1_position)}", ", ".join(others), number(r.median_abs),
            number(ratio), check(bool(getattr(r, "massive", False)))]  # fmt: skip


def massive_table(inputs: ReportInputs) -> Section | None:
    stats = inputs.profile.layer_stats
    if stats.empty or "top1_abs" not in stats:
        return None
    se_layers = set(inputs.verdict.super_experts["layer"].astype(int))
    ordered = list(stats.sort_values("layer").itertuples())
    marks = [int(r.layer) in se_layers for r in ordered]
    rows = [_massive_row(r) for r in ordered]
    body = paragraphs(texts.MASSIVE_TABLE) + table(MASSIVE_COLUMNS, rows, highlight=marks)
    return Section("massive-activations", "Largest hidden-state values per layer", Raw(body))
