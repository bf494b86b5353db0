"""Reversible expert ablation, random controls and causal confirmation (issue 4)."""

from .ablation import MODES, Ablation, ablate, apply_ablation
from .mean import expert_mean_outputs
from .spec import Expert, experts_json, format_experts, load_experts, parse_experts, validate_experts

__all__ = [
    "MODES", "Ablation", "Expert", "ablate", "apply_ablation", "expert_mean_outputs", "experts_json",
    "format_experts", "load_experts", "parse_experts", "validate_experts",
]  # fmt: skip
