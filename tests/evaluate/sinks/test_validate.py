"""Layer and head checks of `sinks`: sizes from a config, before and after loading."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from superexperts.evaluate.sinks.validate import check_layers, config_sizes
from superexperts.runs.errors import UserError


def test_a_config_json_that_leaves_heads_to_transformers_is_checked_after_loading():
    view = SimpleNamespace(num_hidden_layers=4)  # config.json without num_attention_heads (a default)
    assert config_sizes(view, loaded=False) is None  # no early check, no message about the view's type
    with pytest.raises(UserError, match="no num_hidden_layers/num_attention_heads"):
        config_sizes(view)  # a loaded model's config must state both
    vl = SimpleNamespace(text_config=SimpleNamespace(num_hidden_layers=4, num_attention_heads=8))
    assert config_sizes(vl, loaded=False) == config_sizes(vl) == (4, 8)
    with pytest.raises(UserError, match=r"--layers \[4\] out of range; the model has layers 0..3"):
        check_layers(4, [1, 4])
