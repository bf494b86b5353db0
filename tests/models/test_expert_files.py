"""A binary file given as an experts list is refused in one line (issue 14.6)."""

from __future__ import annotations

import pytest

from superexperts.models.experts import load_experts
from superexperts.runs.errors import UserError


@pytest.mark.parametrize("content", [bytes(range(256)), b"1:2\x00,3:4", "1:68".encode("utf-16"), b"\x89PNG\r\n\x1a\n"])
@pytest.mark.parametrize("name", ["experts.txt", "experts.json", "model.safetensors"])
def test_binary_expert_file(tmp_path, content, name):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UserError, match="is not a text expert list") as info:
        load_experts(str(path))
    assert "\n" not in str(info.value)


def test_text_files_still_load(tmp_path):
    (tmp_path / "e.txt").write_text("1:68  # the first\n2:92\n")
    assert load_experts(str(tmp_path / "e.txt")) == [(1, 68), (2, 92)]
