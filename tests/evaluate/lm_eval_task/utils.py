"""Loads the local documents of the tiny lm-eval task (called by lm-eval through `custom_dataset`)."""

import json
from pathlib import Path

import datasets

DOCS = Path(__file__).with_name("tiny_choice.jsonl")


def load_docs(**_metadata) -> datasets.DatasetDict:
    rows = [json.loads(line) for line in DOCS.read_text().splitlines() if line.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})
