"""Expert lists: the Expert type; parse `1:68,2:92,4:shared` or a file; resolve `super`; validate.

An expert is `(layer, expert)` with `expert` an int (a routed expert) or `"shared"` (the shared
expert of that layer). Every subcommand that takes experts goes through `resolve_experts`, then
`check_experts_in_config` (before the weights are read) and `validate_experts` (against the
loaded model), so bad input never leaves a half-ablated model behind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..runs.errors import UserError
from .adapters import ModelMap

Expert = tuple[int, int | str]  # (layer, expert index | "shared")

_FORMAT_HINT = "use LAYER:EXPERT pairs separated by commas, e.g. 1:68,2:92,4:shared"


def _parse_pair(text: str) -> Expert:
    layer_text, sep, expert_text = text.strip().partition(":")
    if not sep:
        raise UserError(f"bad expert {text.strip()!r}; {_FORMAT_HINT}.")
    try:
        layer = int(layer_text)
        expert: int | str = "shared" if expert_text.strip() == "shared" else int(expert_text)
    except ValueError:
        raise UserError(f"bad expert {text.strip()!r}; {_FORMAT_HINT}.") from None
    return layer, expert


def parse_experts(text: str) -> list[Expert]:
    """Parse a comma-separated list of LAYER:EXPERT pairs.

    >>> parse_experts("1:68,2:92,4:shared")
    [(1, 68), (2, 92), (4, 'shared')]
    """
    pairs = [p for p in text.split(",") if p.strip()]
    if not pairs:
        raise UserError(f"empty expert list {text!r}; {_FORMAT_HINT}.")
    return [_parse_pair(p) for p in pairs]


def experts_from_records(records: Any, source: str) -> list[Expert]:
    """[{"layer": int, "expert": int | "shared"}, ...] (or a super_experts.json dict) -> experts."""
    if isinstance(records, dict) and "super_experts" in records:
        records = records["super_experts"]
    if isinstance(records, dict) and "experts" in records:
        records = records["experts"]
    if not isinstance(records, list):
        raise UserError(f"{source}: expected a list of {{'layer': ..., 'expert': ...}} records.")
    experts = []
    for r in records:
        try:
            expert = r["expert"] if r["expert"] == "shared" else int(r["expert"])
            experts.append((int(r["layer"]), expert))
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{source}: bad record {r!r}; each needs 'layer' (int) and 'expert' (int or 'shared').")
    return experts


def load_experts(spec: str | os.PathLike) -> list[Expert]:
    """An expert list from a LIST string or a file (JSON records / super_experts.json, or a LIST).

    >>> load_experts("runs/qwen3/super_experts.json")
    [(1, 68), (2, 92), (3, 82)]
    """
    path = Path(spec)
    if not path.is_file():
        if any(c in str(spec) for c in "/\\") or str(spec).endswith((".json", ".txt")):
            raise UserError(f"expert file not found: {spec}; pass an existing file or a LIST like 1:68,2:92.")
        return parse_experts(str(spec))
    try:
        text: str | None = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or "\x00" in text:  # a model file, an archive... passed by mistake
        raise UserError(f"{path} is not a text expert list (binary); pass JSON records, super_experts.json "
                        "or a LIST file like 1:68,2:92.")  # fmt: skip
    if path.suffix == ".json" or text.lstrip().startswith(("[", "{")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"{path} is not valid JSON ({e.msg}); fix or re-create it.") from None
        return experts_from_records(data, str(path))
    return parse_experts(",".join(line.split("#")[0] for line in text.splitlines()))


def validate_experts(model_map: ModelMap, experts: list[Expert]) -> list[Expert]:
    """Check every expert exists in the model; return them without duplicates, in order.

    Raises UserError naming the first bad entry (empty list, layer without routed experts,
    expert index out of range, 'shared' on a layer without a shared expert).
    """
    if not experts:
        raise UserError(f"the expert list is empty; {_FORMAT_HINT}.")
    out: list[Expert] = []
    for layer, expert in experts:
        block = model_map.block(layer) if 0 <= layer < model_map.num_layers else None
        if block is None:
            raise UserError(f"layer {layer} is out of range; the model has layers 0..{model_map.num_layers - 1}.")
        if expert == "shared":
            if block.shared is None:
                raise UserError(f"layer {layer} has no shared expert; use a routed expert index 0..{block.num_experts - 1}.")
        elif not isinstance(expert, int) or not 0 <= expert < block.num_experts:
            raise UserError(f"expert {layer}:{expert} is out of range; layer {layer} has experts 0..{block.num_experts - 1}.")
        if (layer, expert) not in out:
            out.append((layer, expert))
    return out


def experts_json(experts: list[Expert]) -> list[dict[str, Any]]:
    """JSON form: [{"layer": int, "expert": int | "shared"}]."""
    return [{"layer": int(layer), "expert": expert} for layer, expert in experts]


def format_experts(experts: list[Expert]) -> str:
    """The LIST form, e.g. '1:68,2:92,4:shared'."""
    return ",".join(f"{layer}:{expert}" for layer, expert in experts)


def check_experts_in_config(experts: list[Expert], config) -> None:
    """Range-check an expert list from the model config alone, before the weights are read.
    (Dense layers and shared experts need the model; `validate_experts` checks them after loading.)"""
    from .loading import EXPERT_COUNT_KEYS

    text = getattr(config, "text_config", None) or config
    layers = getattr(text, "num_hidden_layers", None)
    per_layer = next((getattr(text, k) for k in EXPERT_COUNT_KEYS if isinstance(getattr(text, k, None), int)), None)
    for layer, expert in experts:
        if isinstance(layers, int) and not 0 <= layer < layers:
            raise UserError(f"layer {layer} is out of range; the model has layers 0..{layers - 1}.")
        if isinstance(expert, int) and isinstance(per_layer, int) and not 0 <= expert < per_layer:
            raise UserError(f"expert {layer}:{expert} is out of range; the model has experts 0..{per_layer - 1}.")


def run_super_experts(run_dir: str | os.PathLike, flag: str | None = None) -> list[Expert]:
    """The SEs a profile run folder saved (its super_experts.json); refuses an empty list, naming
    `flag` (the command's expert-list flag) as the way out, or re-identification when it has none."""
    from ..runs.runfolder import load_super_experts

    experts = experts_from_records(load_super_experts(run_dir), f"{run_dir}/super_experts.json")
    if not experts:
        fix = (f"pass the experts instead, e.g. {flag} 1:68,2:92" if flag else
               f"re-identify them with `superexperts identify --from {run_dir} --criterion ...`")  # fmt: skip
        raise UserError(f"{run_dir}/super_experts.json lists no Super Experts; {fix}.")
    return experts


def resolve_experts(spec: str, from_dir: str | os.PathLike | None,
                    flag: str | None = None) -> tuple[list[Expert] | None, str]:  # fmt: skip
    """(experts, source) for `super|LIST|FILE`, before any model is loaded.

    "super" takes the SEs of `from_dir`; without a run folder it gives (None, "profiled") and the
    recipe decides (profile the model now, the demo's planted list, or an error).

    >>> resolve_experts("1:68,2:92", None)
    ([(1, 68), (2, 92)], 'custom')
    """
    if spec != "super":
        return load_experts(spec), "custom"
    if from_dir is None:
        return None, "profiled"
    return run_super_experts(from_dir, flag), f"{from_dir}/super_experts.json"
