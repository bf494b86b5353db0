"""The "What protection buys" section, from quant_eval.json (left out when the file is absent).

quant_eval.json  {"scheme": {...}, "conditions": [{"name", "protected", "quantized_only", "quantized_experts",
                  "perplexity", "massive_retention": [per layer], "super_experts": [...], "d_sink", "sink_rate",
                  "tasks", "generations"}], "summary": {"protect-random": {...}}}
"""

from __future__ import annotations

import math
from typing import Any

from .basis import rests_on
from .eval_sections import control_summary, experts_text, generations, perplexity_judge, task_table
from .inputs import ReportInputs
from .page import Raw, Section, esc, figure, number, paragraphs, table
from .quant_figures import fig_protection, floats

PROTECTION = (
    ("The experts' weights were quantized in memory to fewer bits (round to nearest, the simplest method "
     "compression tools use), in five ways: nothing ('original'), every expert ('all'), every expert but the "
     "Super Experts ('protect-super'), every expert but as many randomly chosen other experts ('protect-random', "
     "one row per seed: the control), and only the Super Experts ('se-only'). If the Super Experts are what "
     "quantization must spare, 'protect-super' stays closer to the original than 'all' and than the random "
     "protections, and 'se-only' alone does visible harm."),
    ("'worst MA retention' is the smallest ratio, over the layers from the first Super Expert's on, of the "
     "largest hidden-state value to the original's (1 = the massive activation is intact). 'SE output change' is "
     "the largest relative change of a Super Expert's largest output. D_sink is how much of the attention on the "
     "first token disappeared (paper Eq. 7; 1 = all of it), averaged over layers."),
)
CAPTION = ("Left: perplexity change against the original per condition, in percent (lower is better; each label "
           "gives the perplexity); the random-protection seeds are drawn as one bar (their mean) with a whisker from "
           "the lowest to the highest seed and a dot per seed. Right: the largest hidden-state value after each "
           "layer divided by the original's, one line per condition, the random protections as a grey band (lowest "
           "to highest seed) around their mean; 1 means untouched.")


def _mean(values: Any) -> float | None:
    finite = [v for v in floats(values) if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def _row(c: dict[str, Any]) -> list[Any]:
    ses = [s for s in c.get("super_experts") or [] if isinstance(s, dict)]
    first = min((int(s.get("layer", 0)) for s in ses), default=0)
    kept = [v for v in floats(c.get("massive_retention"))[first:] if not math.isnan(v)]
    changes = [v for v in floats([s.get("relative_change") for s in ses]) if not math.isnan(v)]
    change = max(changes, key=abs) if changes else None
    only = c.get("quantized_only")  # a list for original (empty) and se-only
    protected = experts_text(c.get("protected")) if only is None else "all others" if only else "all"
    return [c.get("name", ""), c.get("quantized_experts", ""), protected, number(c.get("perplexity"), 7),
            number(min(kept)) if kept else "", "" if change is None else f"{change:+.1%}",
            number(_mean(c.get("d_sink"))), number(c.get("sink_rate"))]  # fmt: skip


def _scheme_text(scheme: Any) -> str:
    if not isinstance(scheme, dict):
        return ""
    acts = f", down_proj inputs {scheme.get('act_bits')}-bit per token" if scheme.get("act_bits") else ""
    return (f"Scheme: {scheme.get('bits')}-bit weights, one scale per {scheme.get('granularity')}{acts}; "
            f"{scheme.get('method')} with {scheme.get('library')}.")


def protection(inputs: ReportInputs) -> Section | None:
    title = "What protection buys"
    data, error = inputs.optional("quant_eval.json")
    if error:
        return Section("protection", title, Raw(f'<p class="warn">{esc(error)}</p>'))
    if data is None:
        return None
    conditions = [c for c in data.get("conditions") or [] if isinstance(c, dict)]
    columns = ["condition", "experts quantized", "kept in full precision", "perplexity", "x original",
               "against the random protections", "worst MA retention", "SE output change", "mean D_sink",
               "sink rate"]  # fmt: skip
    judge = perplexity_judge(conditions, data.get("summary"), "protect-random")
    rows = [[*r[:4], *judge(c), *r[4:]] for r, c in ((_row(c), c) for c in conditions)]
    body = paragraphs(*PROTECTION, _scheme_text(data.get("scheme"))) + rests_on(data) + table(columns, rows)
    body += control_summary(data.get("summary"))
    html, files = figure(fig_protection(conditions, data.get("summary") or {}), "protection", CAPTION,
                         "Perplexity and massive activation retained per quantization condition")  # fmt: skip
    return Section("protection", title, Raw(body + html + task_table(conditions) + generations(conditions)), files)
