"""Reversible expert ablation, random controls and causal confirmation (issue 4)."""

from .ablation import MODES, Ablation, ablate, apply_ablation
from .causal import confirm_candidates, default_candidates
from .controls import random_controls
from .mean import expert_mean_outputs

__all__ = ["MODES", "Ablation", "ablate", "apply_ablation", "confirm_candidates", "default_candidates",
           "expert_mean_outputs", "random_controls"]
