"""lm-eval loader of `demo_arith`: the held-out addition pairs in demo_arith.jsonl (written by
scripts/train_demo.py from superexperts.models.demo_data)."""

import json
from pathlib import Path


def load(**_metadata):
    import datasets

    path = Path(__file__).with_name("demo_arith.jsonl")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})
