"""Reversible expert ablation, random controls and causal confirmation (issue 4)."""

from .ablation import Ablation, ablate, apply_ablation
from .spec import Expert, load_experts, parse_experts, validate_experts

__all__ = ["Ablation", "Expert", "ablate", "apply_ablation", "load_experts", "parse_experts", "validate_experts"]
