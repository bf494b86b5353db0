"""Atoms: the intermediate neurons of an expert (CAMERA's micro-experts, HEAPr's atomic experts).

Atom k of expert e is row k of its gate projection, row k of its up projection and column k of its
down projection; its activation a[t,k] = act(gate_k . x_t) * (up_k . x_t) is down_proj's input k,
and the expert's output is sum_k a[t,k] w_k (+ the down bias). Where those live:

- fused, concatenated (Qwen3-MoE, Mixtral, DeepSeek, ...): `gate_up_proj[e]` (2I, H) rows k and
  I+k, `down_proj[e]` (H, I) column k;
- fused, interleaved and transposed (GPT-OSS): `gate_up_proj[e]` (H, 2I) columns 2k and 2k+1,
  `gate_up_proj_bias[e]` entries 2k and 2k+1, `down_proj[e]` (I, H) row k;
- dense-routed (Llama4): transposed halves, `gate_up_proj[e]` (H, 2I) columns k and I+k;
- ModuleList experts and shared experts (plain MLPs): row k (weight and bias) of every Linear that
  feeds the down projection, column k of the down projection.

An atom is written `(layer, expert, k)`, with expert an int or "shared" as in `experts.Expert`;
the LIST form is `1:68:3,2:92:7,4:shared:0`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..runs.errors import UserError
from .experts import Expert, validate_experts

if TYPE_CHECKING:  # atom lists are parsed before torch loads; the slices of a model import it
    from torch import nn

    from .adapters import ModelMap, MoEBlock

Atom = tuple[int, int | str, int]  # (layer, expert index | "shared", atom index)
# (module, parameter name, index): what `device_map.edit_parameter` changes for some atoms of one expert
AtomParam = tuple["nn.Module", str, tuple]

_FORMAT_HINT = "use LAYER:EXPERT:ATOM triples separated by commas, e.g. 1:68:3,2:92:7,4:shared:0"


def _parse_triple(text: str) -> Atom:
    parts = text.strip().split(":")
    try:
        if len(parts) != 3:
            raise ValueError
        expert: int | str = "shared" if parts[1].strip() == "shared" else int(parts[1])
        return int(parts[0]), expert, int(parts[2])
    except ValueError:
        raise UserError(f"bad atom {text.strip()!r}; {_FORMAT_HINT}.") from None


def parse_atoms(text: str) -> list[Atom]:
    """Parse a comma-separated list of LAYER:EXPERT:ATOM triples.

    >>> parse_atoms("1:68:3,4:shared:0")
    [(1, 68, 3), (4, 'shared', 0)]
    """
    triples = [p for p in text.split(",") if p.strip()]
    if not triples:
        raise UserError(f"empty atom list {text!r}; {_FORMAT_HINT}.")
    return [_parse_triple(p) for p in triples]


def format_atoms(atoms: list[Atom]) -> str:
    """The LIST form, e.g. '1:68:3,4:shared:0'."""
    return ",".join(f"{layer}:{expert}:{k}" for layer, expert, k in atoms)


def atoms_json(atoms: list[Atom]) -> list[dict[str, Any]]:
    """JSON form: [{"layer": int, "expert": int | "shared", "atom": int}]."""
    return [{"layer": int(layer), "expert": expert, "atom": int(k)} for layer, expert, k in atoms]


def atom_key(atom: Atom) -> tuple:
    """A sort key that orders "shared" after the routed experts of a layer."""
    layer, expert, k = atom
    return (layer, expert == "shared", -1 if expert == "shared" else expert, k)


def super_atoms_of(records: list[dict[str, Any]]) -> dict[Expert, list[tuple[int, float]]]:
    """{SE: [(atom, share), ...]} from super_experts.json entries carrying "super_atoms" (issue 20);
    entries without it are left out."""
    out: dict[Expert, list[tuple[int, float]]] = {}
    for r in records:
        if not r.get("super_atoms"):
            continue
        expert = r["expert"] if r["expert"] == "shared" else int(r["expert"])
        out[(int(r["layer"]), expert)] = [(int(a["atom"]), float(a.get("share", float("nan")))) for a in r["super_atoms"]]
    return out


def resolve_atoms(spec: str, from_dir: str | None) -> tuple[list[Atom], str]:
    """(atoms, source) for `--atoms super|LIST`, before any model is loaded: "super" takes the super
    atoms of `from_dir`'s super_experts.json.

    >>> resolve_atoms("1:68:3,2:92:7", None)
    ([(1, 68, 3), (2, 92, 7)], 'custom')
    """
    if spec != "super":
        return parse_atoms(spec), "custom"
    if from_dir is None:
        raise UserError("--atoms super takes the super atoms of a profile run: pass --from RUN_DIR, or list atoms "
                        "like 1:68:3,2:92:7.")  # fmt: skip
    from ..runs.runfolder import load_super_experts

    found = super_atoms_of(load_super_experts(from_dir))
    if not found:
        raise UserError(f"{from_dir}/super_experts.json has no super atoms; re-run `superexperts profile` without "
                        "--no-atoms (older runs lack them) or list atoms like 1:68:3.")  # fmt: skip
    return [(layer, expert, k) for (layer, expert), ks in found.items() for k, _ in ks], "super"


def _transposed(block: MoEBlock) -> bool:
    return block.layout == "dense_routed" or bool(getattr(block.experts, "is_transposed", False))


def _mlp(block: MoEBlock, expert: int | str) -> tuple[nn.Module, nn.Linear] | None:
    """(MLP, its down Linear) of a shared or ModuleList expert, or None for fused experts."""
    if expert == "shared":
        return block.shared, block.shared_down
    if block.layout == "modulelist":
        return block.experts[expert], block.expert_down(int(expert))  # type: ignore[index,return-value]
    return None


def atom_count(block: MoEBlock, expert: int | str) -> int:
    """I: the expert's number of atoms (down_proj's input size)."""
    mlp = _mlp(block, expert)
    if mlp is not None:
        return int(mlp[1].in_features)
    down = block.experts.down_proj
    return int(down.shape[-2] if _transposed(block) else down.shape[-1])


def atom_params(block: MoEBlock, expert: int | str, atoms: list[int]) -> list[AtomParam]:
    """Every (module, parameter, index) slice holding `atoms` of one expert: gate and up rows (and
    their bias entries), down columns. The index is for `device_map.edit_parameter`."""
    import torch
    from torch import nn

    found = _mlp(block, expert)
    if found is not None:
        mlp, down = found
        width = down.in_features
        feeding = [m for m in mlp.modules() if isinstance(m, nn.Linear) and m is not down and m.out_features == width]
        params: list[AtomParam] = [(down, "weight", (slice(None), list(atoms)))]  # (H, I) columns
        for m in feeding:  # gate/up (w1/w3, fc1): (I, H) rows
            params += [(m, name, (list(atoms),)) for name in ("weight", "bias") if getattr(m, name) is not None]
        return params
    experts, e, width = block.experts, int(expert), atom_count(block, expert)
    transposed = _transposed(block)
    gated = hasattr(experts, "gate_up_proj")
    name = "gate_up_proj" if gated else "up_proj"
    if not gated:
        cols = list(atoms)
    elif getattr(experts, "is_concatenated", True):
        cols = list(atoms) + [width + k for k in atoms]  # gate half, then up half
    else:
        cols = [j for k in atoms for j in (2 * k, 2 * k + 1)]  # GPT-OSS: [g0, u0, g1, u1, ...]
    params = [(experts, name, (e, slice(None), cols) if transposed else (e, cols)),
              (experts, "down_proj", (e, list(atoms)) if transposed else (e, slice(None), list(atoms)))]  # fmt: skip
    bias = getattr(experts, name + "_bias", None)
    if isinstance(bias, torch.Tensor):
        params.append((experts, name + "_bias", (e, cols)))  # (E, 2I)
    return params


def validate_atoms(model_map: ModelMap, atoms: list[Atom]) -> list[Atom]:
    """Check every atom exists in the model; return them without duplicates, in order. Raises a
    one-line UserError naming the first bad entry. Linear in the number of atoms (a criterion's
    set holds millions on a large model)."""
    if not atoms:
        raise UserError(f"the atom list is empty; {_FORMAT_HINT}.")
    unique = list(dict.fromkeys(atoms))
    experts = validate_experts(model_map, list(dict.fromkeys((layer, expert) for layer, expert, _ in unique)))
    widths = {(layer, e): atom_count(model_map.block(layer), e) for layer, e in experts}
    for layer, expert, k in unique:
        if not 0 <= k < widths[(layer, expert)]:
            raise UserError(f"atom {layer}:{expert}:{k} is out of range; expert {layer}:{expert} has atoms "
                            f"0..{widths[(layer, expert)] - 1}.")  # fmt: skip
    return unique


def by_expert(atoms: list[Atom]) -> dict[Expert, list[int]]:
    """{(layer, expert): [atom, ...]} in first-seen order."""
    grouped: dict[Expert, list[int]] = {}
    for layer, expert, k in atoms:
        grouped.setdefault((layer, expert), []).append(k)
    return grouped


def atoms_per_expert(model_map: ModelMap, *, shared: bool = False) -> dict[Expert, int]:
    """{(layer, expert): number of atoms} of every routed expert (and shared ones with `shared`)."""
    sizes: dict[Expert, int] = {}
    for b in model_map.moe:
        sizes |= {(b.layer, e): atom_count(b, e) for e in range(b.num_experts)}
        if shared and b.shared is not None:
            sizes[(b.layer, "shared")] = atom_count(b, "shared")
    return sizes
