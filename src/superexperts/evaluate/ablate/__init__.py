"""Reversible expert ablation, random controls and causal confirmation (issue 4); atom zeroing and
random atom controls (issue 20)."""

from ...runs.lazy import lazy_exports

# On first use: the requests' checks import `controls` before torch loads, which the others import.
__getattr__ = lazy_exports(__name__, {
    "MODES": "ablation", "Ablation": "ablation", "ablate": "ablation", "apply_ablation": "ablation",
    "random_atom_controls": "atoms", "zero_atoms": "atoms", "confirm_candidates": "causal",
    "default_candidates": "causal", "random_controls": "controls", "expert_mean_outputs": "mean"})  # fmt: skip

__all__ = ["MODES", "Ablation", "ablate", "apply_ablation", "confirm_candidates", "default_candidates",
           "expert_mean_outputs", "random_atom_controls", "random_controls", "zero_atoms"]
