"""Shared fixtures: tiny models of every family (see families.py) and the demo model."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# No network in tests: a missing hub id must fail at once, not after ~20 s of retries. huggingface_hub
# reads these when first imported, so they are set before anything imports it (and patched below in
# case a plugin imported it earlier).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import huggingface_hub.constants
import pytest
import torch
from safetensors.torch import save_file

from superexperts.identify.profile_run import save_run
from superexperts.identify.rules import paper

huggingface_hub.constants.HF_HUB_OFFLINE = True

sys.path.insert(0, str(Path(__file__).parent))
import families
from report_helpers import make_profile, write_optional_files

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(params=families.FAMILIES)
def family_model(request):
    """(family name, tiny random model) for every supported family."""
    return request.param, families.build(request.param)


@pytest.fixture
def tiny_qwen3():
    return families.build("qwen3_moe")


@pytest.fixture
def calib_ids():
    return families.random_ids(samples=4, seq_len=16)


@pytest.fixture(scope="session")
def demo():
    """(model, tokenizer) of the built-in demo, with its planted Super Experts (DEMO_SUPER_EXPERTS,
    DEMO_OUTLIER in superexperts.models.demo). Treat as read-only; ablations must restore it."""
    from superexperts.models.demo import build_demo

    return build_demo()


@pytest.fixture(scope="session")
def demo_calib(demo):
    """16 windows of 64 tokens of the built-in text, BOS first (the demo's default calibration)."""
    from superexperts.capture.data import calibration

    return calibration(None, demo[1], seq_len=64, samples=16, seed=0)


@pytest.fixture(scope="session")
def demo_profile_run(tmp_path_factory, demo):
    """(run folder, Profile, ids): the demo profiled on 4 windows of 32 built-in tokens, saved with the
    paper rule's verdict. Treat as read-only; copy the folder to change it."""
    from superexperts.capture.profile import profile
    from superexperts.identify.rules import identify
    from superexperts.models.demo import builtin_text

    model, tokenizer = demo
    ids = tokenizer(builtin_text(), return_tensors="pt").input_ids[0][:128].view(4, 32)
    prof = profile(model, ids)
    prof.meta["synthetic"] = True
    folder = tmp_path_factory.mktemp("demo_run")
    save_run(folder, prof, identify(prof.expert_stats, prof.num_layers, "paper"))
    return folder, prof, ids


@pytest.fixture(scope="session")
def demo_atom_run(demo_profile_run, demo, tmp_path_factory):
    """(run folder, CAMERA scores, super_experts.json entries): the demo profile run with super atoms
    in its super_experts.json, and the demo's CAMERA score table, both computed by hand on the run's
    windows (atom_helpers: stand-ins for issue 20's producers). Read-only; copy the folder to write."""
    import json
    import shutil

    from atom_helpers import camera_scores_by_hand, super_atoms_by_hand

    source, _, ids = demo_profile_run
    folder = tmp_path_factory.mktemp("atom_run") / "run"
    shutil.copytree(source, folder)
    path = folder / "super_experts.json"
    doc = json.loads(path.read_text())
    for s in doc["super_experts"]:
        s["super_atoms"] = super_atoms_by_hand(demo[0], ids, (s["layer"], s["expert"]))
    path.write_text(json.dumps(doc))
    return folder, camera_scores_by_hand(demo[0], ids), doc["super_experts"]


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory):
    """The demo saved as a local checkpoint folder (what `superexperts profile` with no MODEL loads)."""
    from superexperts.models.demo import demo_checkpoint

    return demo_checkpoint(tmp_path_factory.mktemp("cache") / "demo")


# -- checkpoint folders (stream, export, CLI) --

def save_hub(model, folder: Path, **kwargs) -> Path:
    """transformers 5 writes the hub per-expert layout (experts.7.down_proj.weight) by default."""
    model.save_pretrained(folder, **kwargs)
    return folder


def save_fused(model, folder: Path) -> Path:
    """The in-memory (fused) state dict written as is, with the model's config."""
    folder.mkdir(parents=True)
    model.config.save_pretrained(folder)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if "rotary" not in k}
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """{(family, layout): (model, folder)}, built on first use."""
    cache: dict = {}

    def get(family: str, layout: str = "hub"):
        if (family, layout) not in cache:
            model = families.build(family)
            folder = tmp_path_factory.mktemp(f"{family}-{layout}") / "ckpt"
            if layout == "hub":
                save_hub(model, folder)
            elif layout == "sharded":
                save_hub(model, folder, max_shard_size="40KB")
            else:
                save_fused(model, folder)
            cache[family, layout] = (model, folder)
        return cache[family, layout]

    return get


# -- hand-built run folders (report, CLI) --

@pytest.fixture
def hand_profile():
    return make_profile()


@pytest.fixture
def hand_verdict(hand_profile):
    return paper(hand_profile.expert_stats, hand_profile.num_layers)


@pytest.fixture
def hand_run(tmp_path, hand_profile, hand_verdict):
    """A run folder as `profile` writes it (no report yet)."""
    out = tmp_path / "run"
    save_run(out, hand_profile, hand_verdict)
    return out


@pytest.fixture(scope="session")
def full_report(tmp_path_factory):
    """(run folder, report.html text) of a synthetic run with every optional file; rendered once."""
    from superexperts.report import write_report

    prof = make_profile(synthetic=True)
    run = tmp_path_factory.mktemp("full") / "run"
    save_run(run, prof, paper(prof.expert_stats, prof.num_layers))
    write_optional_files(run, prof)
    path = write_report(run)
    return run, path.read_text()
