"""Reversible expert ablation, random controls and causal confirmation (issue 4)."""

from .ablation import MODES, Ablation, ablate, apply_ablation
from .causal import confirm_candidates, default_candidates
from .controls import random_controls
from .mean import expert_mean_outputs
from .spec import Expert, experts_json, format_experts, load_experts, parse_experts, validate_experts

__all__ = [
    "MODES", "Ablation", "Expert", "ablate", "apply_ablation", "confirm_candidates", "default_candidates",
    "expert_mean_outputs", "experts_json", "format_experts", "load_experts", "parse_experts", "random_controls",
    "validate_experts",
]  # fmt: skip
