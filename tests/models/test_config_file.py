"""config.json read with json (models.config_file): the numbers the input checks take from it are
transformers' own, for every family; what it cannot answer goes to AutoConfig."""

from __future__ import annotations

import json

import pytest
from transformers import AutoConfig

from families import CONFIGS, FAMILIES
from superexperts.models.config_file import config_layers, expert_count, experts_per_layer, local_config
from superexperts.models.fields import checks_config


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
