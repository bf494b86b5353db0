"""config.json read with json (models.config_file): the numbers the input checks take from it are
transformers' own, for every family; what it cannot answer goes to AutoConfig."""

from __future__ import annotations

import json

import pytest
from transformers import AutoConfig

from families import CONFIGS, FAMILIES, build
from superexperts.models.adapters import map_model
from superexperts.models.atoms import atom_count
from superexperts.models.config_file import (
    atoms_per_expert,
    check_atoms_in_config,
    config_layers,
    expert_count,
    experts_per_layer,
    local_config,
)
from superexperts.models.fields import checks_config
from superexperts.runs.errors import UserError


@pytest.mark.parametrize("family", FAMILIES)
def test_the_json_view_counts_as_transformers_does(tmp_path, family):
    CONFIGS[family][0]().save_pretrained(tmp_path)
    view, config = local_config(tmp_path), AutoConfig.from_pretrained(tmp_path)
    assert view is not None and config_layers(view) is not None
    for count in (config_layers, experts_per_layer, expert_count):
        assert count(view) == count(config), count.__name__


def test_what_the_json_view_leaves_to_transformers(tmp_path):
    assert local_config(None) is None  # the built-in demo
    assert local_config("org/model") is None  # a hub id
    assert local_config(tmp_path) is None  # no config.json
    (tmp_path / "config.json").write_text('{"model_type": "qwen3_moe", oops')
    assert local_config(tmp_path) is None  # damaged: AutoConfig's reader names the problem
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "tinyse", "num_hidden_layers": 4,
                                                      "auto_map": {"AutoConfig": "configuration_tinyse.C"}}))
    assert local_config(tmp_path) is None  # remote code: --trust-remote-code decides


def test_a_config_without_its_layer_count_is_read_by_transformers(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "qwen3_moe"}')
    assert config_layers(local_config(tmp_path)) is None
    config = checks_config(str(tmp_path))
    assert config_layers(config) == AutoConfig.from_pretrained(tmp_path).num_hidden_layers  # its default


def config_sizes(config) -> tuple[int | None, int | None, int | None]:
    return config_layers(config), experts_per_layer(config), atoms_per_expert(config)


@pytest.mark.parametrize("family", FAMILIES)
def test_config_sizes_are_the_built_models(family):
    model = build(family)
    mm = map_model(model)
    layers, experts, width = config_sizes(model.config)
    assert layers == mm.num_layers
    assert {experts} == {b.num_experts for b in mm.moe}
    assert {width} == {atom_count(b, e) for b in mm.moe for e in range(b.num_experts)}
    # the same from the config.json dict
    assert config_sizes(model.config.to_dict()) == (layers, experts, width)


QWEN = {"num_hidden_layers": 48, "num_experts": 128, "intermediate_size": 6144, "moe_intermediate_size": 768}


@pytest.mark.parametrize("atom, message", [
    ((48, 0, 0), "atom 48:0:0 is out of range; the model has layers 0..47."),
    ((1, 128, 0), "atom 1:128:0 is out of range; the model has experts 0..127."),
    ((1, 68, 768), "atom 1:68:768 is out of range; expert 1:68 has atoms 0..767."),
    ((1, "shared", -2), "atom 1:shared:-2 is out of range; atoms count from 0."),
])  # fmt: skip
def test_out_of_range_atoms_name_the_entry_and_the_range(atom, message):
    check_atoms_in_config([(1, 68, 767), (47, 127, 0), (1, "shared", 5000)], QWEN)  # in range; shared: after loading
    with pytest.raises(UserError) as e:
        check_atoms_in_config([(1, 68, 3), atom], QWEN)
    assert str(e.value) == message


def test_sizes_the_config_does_not_state_are_not_checked():
    # ERNIE-4.5-VL lists a width per modality: unknown here (the loaded model checks it); Llama4 keeps the
    # dense MLPs' width apart, so intermediate_size is the experts'
    ernie = {"text_config": {"num_hidden_layers": 4, "moe_num_experts": 64, "moe_intermediate_size": [1536, 512],
                             "intermediate_size": 12288}}  # fmt: skip
    assert config_sizes(ernie) == (4, 64, None)
    check_atoms_in_config([(3, 63, 12288)], ernie)
    assert config_sizes({"num_hidden_layers": 2, "num_local_experts": 8, "intermediate_size": 16,
                         "intermediate_size_mlp": 48}) == (2, 8, 16)  # fmt: skip
