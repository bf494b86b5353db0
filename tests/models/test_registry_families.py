"""Every MoE family the installed transformers ships (from its model registry, tests/registry.py) profiles
exactly: each routed expert's max |down_proj output| and routed-token count equal a per-token
recomputation with plain matmuls (tests/recompute.py).

A family is skipped, with the reason, when its tiny config or tiny model cannot be built, or when the
tiny model's own forward fails (a transformers/tiny-size problem, not ours). A family superexperts
refuses is skipped with its one-line refusal ("not supported: ..."); any other exception fails.
`python tests/models/test_registry_families.py` prints the README's list of families from a run.
"""

from __future__ import annotations

import sys

import pytest
import torch

import families
import registry
from recompute import brute_force
from superexperts import profile
from superexperts.runs.errors import UserError

FAMILIES = registry.moe_families()


def checked(family: registry.Family) -> tuple[str, str]:
    """(status, detail): "ok" with the layout and MoE layers, or skip/unsupported with the reason.
    Raises AssertionError when the profile disagrees with the recomputation."""
    try:
        model = registry.build(family)
    except registry.TinyConfigError as e:
        return "skip", str(e)
    ids = families.random_ids(samples=2, seq_len=8)
    try:
        with torch.no_grad():
            model(input_ids=ids, use_cache=False)
    except Exception as e:  # noqa: BLE001 - the family's own forward at tiny sizes
        return "skip", f"tiny model's forward fails: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
    try:
        prof = profile(model, ids, batch_size=1)
    except UserError as e:
        return "unsupported", str(e)
    expected = brute_force(model, ids, batch_size=1)
    routed = prof.expert_stats[prof.expert_stats.kind == "routed"]
    assert len(routed) == len(expected) > 0, family.model_type
    for r in routed.itertuples():
        out, _inp, count = expected[(r.layer, r.expert)]
        assert r.tokens_routed == count, (family.model_type, r.layer, r.expert)
        assert r.max_abs_output == pytest.approx(out, rel=1e-5, abs=1e-6), (family.model_type, r.layer, r.expert)
    assert len(prof.layer_stats) == prof.meta["num_layers"]
    return "ok", f"{prof.meta['experts_layout']}, MoE layers {prof.meta['moe_layers']}"


def test_the_registry_has_moe_families():
    names = {f.model_type for f in FAMILIES}
    assert len(names) > 20 and {"qwen3_moe", "mixtral", "deepseek_v3"} <= names


@pytest.mark.parametrize("family", FAMILIES, ids=[f.model_type for f in FAMILIES])
def test_family_profiles_exactly(family):
    status, detail = checked(family)
    if status != "ok":
        pytest.skip(f"{status}: {detail}")


if __name__ == "__main__":  # the README's table: every family with what this test found
    torch.set_num_threads(1)
    for f in FAMILIES:
        status, detail = checked(f)
        print(f"| `{f.model_type}` | {f.class_name} | {status} | {detail.replace('|', '/')} |")
        sys.stdout.flush()
