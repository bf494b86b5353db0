"""Atom-level pruning: `zero_atoms(model, atoms)` and random atom controls (issue 20).

Zeroing atom k removes the neuron: its gate and up rows (and their bias entries) and its down
column are set to zero through `device_map.edit_parameter`, the edit expert zeroing and fake
quantization use (resident or offloaded weights), so the weights come back bit for bit on exit,
also on exceptions. The expert keeps being routed; the routing weights are untouched.

>>> with zero_atoms(model, [(1, 68, 3), (2, 92, 7)]):
...     loss = model(ids, labels=ids).loss
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import numpy as np
import torch
from torch import nn

from ...models.adapters import map_model
from ...models.atoms import Atom, atom_key, atom_params, by_expert, validate_atoms
from ...models.device_map import edit_parameter
from ...models.experts import Expert
from ...runs.errors import UserError


@contextlib.contextmanager
def zero_atoms(model: nn.Module, atoms: list[Atom]) -> Iterator[list[Atom]]:
    """Zero `atoms` (validated first: nothing changes on bad input) inside the block."""
    model_map = map_model(model)
    atoms = validate_atoms(model_map, list(atoms))
    with contextlib.ExitStack() as stack, torch.no_grad():
        for (layer, expert), ks in by_expert(atoms).items():
            for module, name, index in atom_params(model_map.block(layer), expert, ks):
                edit_parameter(module, name, index, torch.zeros_like, stack)
        yield atoms


def _draw(rng: np.random.Generator, experts: list[Expert], sizes: Mapping[Expert, int], count: int,
          given: set[Atom], where: str) -> list[Atom]:  # fmt: skip
    """`count` distinct atoms of `experts`, none in `given`, uniformly: positions drawn in the flat
    atom numbering (no list of every atom: a large model has millions)."""
    offsets = np.cumsum([0] + [sizes[x] for x in experts])
    inside = {(lay, e): None for lay, e in experts}
    avoid = sum(1 for lay, e, k in given if (lay, e) in inside and 0 <= k < sizes[(lay, e)])
    if count > int(offsets[-1]) - avoid:
        raise UserError(f"cannot draw {count} random atoms {where}: only {int(offsets[-1]) - avoid} others exist.")
    chosen: list[Atom] = []
    for p in rng.choice(int(offsets[-1]), size=count + avoid, replace=False):
        i = int(np.searchsorted(offsets, p, side="right")) - 1
        atom = (*experts[i], int(p - offsets[i]))
        if atom not in given:
            chosen.append(atom)
        if len(chosen) == count:
            break
    return chosen


def random_atom_controls(sizes: Mapping[Expert, int], atoms: list[Atom], n_seeds: int, *,
                         layer_controlled: bool = False, seed: int = 0) -> list[list[Atom]]:  # fmt: skip
    """One random atom set per seed (`seed .. seed + n_seeds - 1`), as many as `atoms`, none of them
    in `atoms`, drawn from the experts of `sizes` ({(layer, expert): atom count}, e.g.
    `models.atoms.atoms_per_expert`); with `layer_controlled`, as many per layer as `atoms` has there.

    >>> random_atom_controls({(1, 0): 16, (1, 1): 16}, [(1, 0, 3)], 2)
    [[(1, 1, 9)], [(1, 0, 12)]]   # values illustrative
    """
    if n_seeds < 0:
        raise UserError(f"--random must be >= 0, got {n_seeds}.")
    if not atoms:
        raise UserError("no atoms to match: random atom controls need at least one atom.")
    given = set(atoms)
    experts = sorted(sizes, key=lambda x: atom_key((*x, 0)))
    wanted: dict[int, int] = {}
    for layer, _, _ in given:
        wanted[layer] = wanted.get(layer, 0) + 1
    controls = []
    for s in range(seed, seed + n_seeds):
        rng = np.random.default_rng(s)
        if layer_controlled:
            chosen = [a for layer, count in sorted(wanted.items())
                      for a in _draw(rng, [x for x in experts if x[0] == layer], sizes, count, given, f"in layer {layer}")]  # fmt: skip
        else:
            chosen = _draw(rng, experts, sizes, len(given), given, "in the model")
        controls.append(sorted(chosen, key=atom_key))
    return controls
