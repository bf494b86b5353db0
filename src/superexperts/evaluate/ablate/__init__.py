"""Reversible expert ablation, random controls and causal confirmation (issue 4); atom zeroing and
random atom controls (issue 20)."""

from .ablation import MODES, Ablation, ablate, apply_ablation
from .atoms import random_atom_controls, zero_atoms
from .causal import confirm_candidates, default_candidates
from .controls import random_controls
from .mean import expert_mean_outputs

__all__ = ["MODES", "Ablation", "ablate", "apply_ablation", "confirm_candidates", "default_candidates",
           "expert_mean_outputs", "random_atom_controls", "random_controls", "zero_atoms"]
