"""`audit`: did a compressed checkpoint keep its Super Experts? Pure functions over two measurements.

Both checkpoints are profiled on the same calibration windows (`recipes.auditing.run_audit`). The verdict is
`damaged` when, for any SE, its max |down_proj output| (a[l,e], paper Eq. 6) or the massive
activation it feeds (max |hidden| over its layer and every later one, `damage.fed_massive`) fell
below (1 - THRESHOLD) of the original's; otherwise `intact`. Rises are reported, not judged.

>>> verdict = audit_verdict(before, after, [(1, 68), (2, 92)])
>>> verdict["verdict"], verdict["reasons"]
('damaged', ['L1 E68: max output fell 100% (744 -> 0)'])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..models.config_file import experts_per_layer
from ..models.experts import Expert
from ..runs.errors import UserError

if TYPE_CHECKING:  # the verdict reads tables (pandas); the request's checks import this module before
    from ..capture.profile import Profile

FORMAT = "superexperts.compress.audit/1"
THRESHOLD = 0.5
THRESHOLD_REASON = (
    "0.5 is the causal check's line (prune-eval --causal): an expert whose removal halves the massive activation "
    "is what makes it, so a checkpoint where an SE's output or the massive activation it feeds fell by half has "
    "lost what the SE does. Rounding moves a super weight by at most 1/(2^b - 1) of itself (7% at 4 bits, 33% at "
    "2 bits), but an SE's output also depends on its gate/up weights and its input, and an SE chain compounds, so "
    "heavy quantization can come near the line (quant-eval measures it); pruning an SE crosses it. Every number "
    "is in the file: pass --threshold for a stricter line."
)
ARCHITECTURE_KEYS = ("model_type", "num_hidden_layers", "hidden_size", "vocab_size")


@dataclass
class Measured:
    """One checkpoint measured on the audit windows."""

    profile: Profile
    perplexity: dict[str, Any] | None  # evaluate.perplexity's record
    sink_mass: list[float]  # per layer, mean attention on the first token
    sink_rate: float
    model: dict[str, Any]  # Loaded.describe()


def _architecture(config) -> dict[str, Any]:
    text = getattr(config, "text_config", None) or config
    found = {k: getattr(text, k, getattr(config, k, None)) for k in ARCHITECTURE_KEYS}
    found["experts"] = experts_per_layer(config)
    return found


def check_same_architecture(original, compressed, names: tuple[str, str]) -> None:
    """Refuse two configs that are not the same architecture (family, depth, width, vocab, experts)."""
    a, b = _architecture(original), _architecture(compressed)
    for key in a:
        if a[key] != b[key]:
            raise UserError(f"{names[1]} is not the same architecture as {names[0]} ({key} {b[key]!r} vs {a[key]!r}); "
                            "audit compares a compressed checkpoint with its own original.")  # fmt: skip


def _fell(before: float, after: float, threshold: float) -> bool:
    return before > 0 and after < (1.0 - threshold) * before


def _se_rows(before: Measured, after: Measured, ses: list[Expert], threshold: float) -> list[dict[str, Any]]:
    from . import damage

    ma_b, ma_a = damage.massive(before.profile.layer_stats), damage.massive(after.profile.layer_stats)
    rows = damage.se_outputs(before.profile.expert_stats, after.profile.expert_stats, ses)
    for r in rows:
        fed_b, fed_a = damage.fed_massive(ma_b, ma_a, r["layer"])
        r |= {"massive_before": fed_b, "massive_after": fed_a, "massive_change": fed_a / fed_b - 1 if fed_b else None,
              "damaged": _fell(r["max_abs_output_before"], r["max_abs_output_after"], threshold)
              or _fell(fed_b, fed_a, threshold)}  # fmt: skip
    return rows


def _reasons(rows: list[dict[str, Any]], threshold: float) -> list[str]:
    reasons = []
    for r in rows:
        name = f"L{r['layer']} " + ("shared" if r["expert"] == "shared" else f"E{r['expert']}")
        for what, b, a in [("max output", r["max_abs_output_before"], r["max_abs_output_after"]),
                           ("massive activation it feeds", r["massive_before"], r["massive_after"])]:  # fmt: skip
            if _fell(b, a, threshold):
                reasons.append(f"{name}: {what} fell {1 - a / b:.0%} ({b:.4g} -> {a:.4g})")
    return reasons


def audit_verdict(before: Measured, after: Measured, ses: list[Expert], threshold: float = THRESHOLD) -> dict:
    """The audit.json body (without metadata): verdict, reasons, per SE and per layer before/after."""
    rows = _se_rows(before, after, ses, threshold)
    from . import damage

    ma_b, ma_a = damage.massive(before.profile.layer_stats), damage.massive(after.profile.layer_stats)
    layers = [{"layer": i, "massive_before": b, "massive_after": a, "retention": r, "sink_mass_before": sb,
               "sink_mass_after": sa}
              for i, (b, a, r, sb, sa) in enumerate(zip(ma_b, ma_a, damage.retention(ma_b, ma_a), before.sink_mass,
                                                        after.sink_mass))]  # fmt: skip
    ppl_b, ppl_a = (m.perplexity["perplexity"] if m.perplexity else None for m in (before, after))
    reasons = _reasons(rows, threshold)
    return {
        "format": FORMAT, "verdict": "damaged" if reasons else "intact", "reasons": reasons,
        "threshold": threshold, "threshold_reason": THRESHOLD_REASON,
        "rule": "damaged when an SE's max |down_proj output| or the massive activation it feeds (max |hidden| over "
                "its layer and every later one) fell below (1 - threshold) x the original's",
        "super_experts": rows, "layers": layers,
        "perplexity": {"before": ppl_b, "after": ppl_a, "detail_before": before.perplexity,
                       "detail_after": after.perplexity},
        "sink_rate": {"before": before.sink_rate, "after": after.sink_rate},
        "original": before.model, "compressed": after.model,
    }  # fmt: skip


def format_audit(document: dict[str, Any]) -> str:
    """Console lines: the verdict, its reasons, each SE before -> after, perplexity."""
    lines = [f"verdict: {document['verdict'].upper()} (threshold: a fall of {document['threshold']:.0%})"]
    lines += [f"  {r}" for r in document["reasons"]]
    for r in document["super_experts"]:
        lines.append(f"  L{r['layer']}:{r['expert']}  max output {r['max_abs_output_before']:.4g} -> "
                     f"{r['max_abs_output_after']:.4g}  massive {r['massive_before']:.4g} -> {r['massive_after']:.4g}")
    ppl = document["perplexity"]
    if ppl["before"] is not None:
        lines.append(f"  perplexity {ppl['before']:.6g} -> {ppl['after']:.6g}")
    return "\n".join(lines)
