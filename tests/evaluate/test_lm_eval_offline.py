"""Offline, a task whose dataset is not cached fails in one line before any model loads (issue 14.6)."""

from __future__ import annotations

from pathlib import Path

import pytest

from superexperts.evaluate.lm_eval import check_tasks
from superexperts.runs.errors import UserError

TASK_DIR = Path(__file__).with_name("lm_eval_task")
UNCACHED = """task: superexperts_uncached
dataset_path: superexperts-no-such-org/no-such-dataset
output_type: multiple_choice
test_split: test
doc_to_text: "{{question}}"
doc_to_choice: "{{choices}}"
doc_to_target: answer
metric_list:
  - metric: acc
"""


def test_uncached_task_data_fails_before_the_model(tmp_path, offline):
    (tmp_path / "uncached.yaml").write_text(UNCACHED)
    with pytest.raises(UserError, match="'superexperts_uncached' cannot load its data offline") as info:
        check_tasks(["superexperts_uncached"], include_path=str(tmp_path))
    assert "\n" not in str(info.value)


def test_tasks_with_local_data_pass_offline(offline):
    assert "superexperts_tiny_choice" in check_tasks(["superexperts_tiny_choice"], include_path=str(TASK_DIR)).all_tasks
