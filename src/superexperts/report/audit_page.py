"""audit.html: one self-contained page for audit.json (verdict, each SE, each layer, perplexity, sinks).

>>> files = audit_files(document)   # {"audit.html": ..., "figures/audit.png": ..., "figures/audit.svg": ...}
"""

from __future__ import annotations

from typing import Any

from .page import Raw, Section, esc, figure, number, paragraphs, render_page, table
from .texts import SYNTHETIC_BANNER

EXPLAIN = (
    "Both checkpoints read the same calibration windows. For each Super Expert (SE) of the original: its largest "
    "output value (a[l,e], before the routing weight), and the massive activation it feeds (the largest "
    "hidden-state value over its layer and every later one). The compressed checkpoint is 'damaged' when any of "
    "these fell below (1 - threshold) of the original's."
)
CAPTION = ("Left: the largest absolute hidden-state value after each layer (log scale), original (solid) and "
           "compressed (dashed); where the SEs write, the value jumps (the massive activation). Right: the mean "
           "attention every later token puts on the first token (the attention sink), per layer.")


def _pct(value: Any) -> str:
    try:
        return f"{float(value):+.1%}"
    except (TypeError, ValueError):
        return ""


def _verdict(doc: dict[str, Any]) -> Section:
    damaged = doc.get("verdict") == "damaged"
    head = (f'<p class="{"warn" if damaged else "answer"}">Verdict: {str(doc.get("verdict", "")).upper()} '
            f"(threshold: a fall of {float(doc.get('threshold', 0)):.0%})</p>")  # fmt: skip
    reasons = "".join(f"<li>{esc(r)}</li>" for r in doc.get("reasons") or [])
    body = Raw(head) + (Raw(f"<ul>{reasons}</ul>") if reasons else Raw(""))
    return Section("verdict", "", Raw(body + paragraphs(EXPLAIN, str(doc.get("threshold_reason", "")))))


def _super_experts(doc: dict[str, Any]) -> Section:
    rows = [[f"{r.get('layer')}:{r.get('expert')}", number(r.get("max_abs_output_before")),
             number(r.get("max_abs_output_after")), _pct(r.get("relative_change")), number(r.get("massive_before")),
             number(r.get("massive_after")), _pct(r.get("massive_change")), "damaged" if r.get("damaged") else "ok"]
            for r in doc.get("super_experts") or []]  # fmt: skip
    columns = ["SE", "max output (original)", "max output (compressed)", "change", "massive fed (original)",
               "massive fed (compressed)", "change", "state"]  # fmt: skip
    return Section("super-experts", "Super Experts", table(columns, rows, highlight=[r[-1] != "ok" for r in rows]))


def _layers(doc: dict[str, Any]) -> Section:
    layers = [r for r in doc.get("layers") or [] if isinstance(r, dict)]
    from .quant_figures import fig_audit

    html, files = figure(fig_audit(layers), "audit", CAPTION, "Massive activation and attention sink per layer")
    rows = [[r.get("layer"), number(r.get("massive_before")), number(r.get("massive_after")),
             number(r.get("retention")), number(r.get("sink_mass_before")), number(r.get("sink_mass_after"))]
            for r in layers]  # fmt: skip
    columns = ["layer", "massive (original)", "massive (compressed)", "retained", "sink mass (original)",
               "sink mass (compressed)"]  # fmt: skip
    return Section("layers", "Massive activation and attention sink per layer", Raw(html + table(columns, rows)), files)


def _summary(doc: dict[str, Any]) -> Section:
    ppl, rate = doc.get("perplexity") or {}, doc.get("sink_rate") or {}
    rows = [["perplexity", number(ppl.get("before"), 6), number(ppl.get("after"), 6)],
            ["sink rate (share of heads with > 0.3 attention on token 0)", number(rate.get("before")),
             number(rate.get("after"))]]  # fmt: skip
    models = [["original", (doc.get("original") or {}).get("model_path", "")],
              ["compressed", (doc.get("compressed") or {}).get("model_path", "")]]  # fmt: skip
    data = ((doc.get("data") or {}).get("perplexity")) or {}
    on = paragraphs(f"Perplexity on {data.get('spec', 'the data recorded in audit.json')}: "
                    f"{data.get('tokens', '?')} tokens in windows of {data.get('seq_len', '?')}"
                    + (f", at most {data['max_windows']} windows" if data.get("max_windows") else "") + ".")
    return Section("summary", "Perplexity, sink rate and checkpoints",
                   Raw(on + table(["measure", "original", "compressed"], rows) + table(["checkpoint", "path"], models)))


def _banner(doc: dict[str, Any]) -> list[Section]:
    if doc.get("synthetic") is not True:
        return []
    return [Section("synthetic", "", Raw(f'<div class="banner">{esc(SYNTHETIC_BANNER)}</div>'))]


def audit_files(document: dict[str, Any]) -> dict[str, bytes]:
    """audit.html and its figure files, for `io.write_files` next to audit.json."""
    parts = [*_banner(document), _verdict(document), _super_experts(document), _layers(document), _summary(document)]
    files: dict[str, bytes] = {"audit.html": render_page("Super Expert audit", parts).encode("utf-8")}
    for part in parts:
        files |= part.files
    return files
