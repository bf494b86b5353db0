"""Super Experts published in the paper, and whether a run agrees with them.

    >>> entry = lookup("Qwen/Qwen3-30B-A3B-Instruct-2507")
    >>> entry["name"], format_experts(known_experts(entry))
    ('Qwen3-30B-A3B', '1:68,2:92,3:82')
    >>> agreement(verdict, entry)["agrees"]
    True

The data lives in `superexperts/resources/known_super_experts.json`, each entry with its source.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources
from typing import Any

from ..models.experts import Expert, experts_from_records, experts_json, format_experts
from ..runs.errors import UserError, did_you_mean
from .rules import Verdict

DATA_FILE = "known_super_experts.json"


@lru_cache(maxsize=1)
def _data() -> dict[str, Any]:
    return json.loads(resources.files("superexperts").joinpath("resources", DATA_FILE).read_text())


def entries() -> list[dict[str, Any]]:
    """All published entries (copies: callers may not change the package data)."""
    return json.loads(json.dumps(_data()["models"]))


def _names(model_name_or_path: str) -> set[str]:
    """Lower-case names a model may be known by: the id itself, its last path component, and the
    repo of a Hugging Face cache folder (`models--Qwen--Qwen3-30B-A3B/snapshots/<hash>`)."""
    text = str(model_name_or_path).strip().rstrip("/\\").lower()
    parts = re.split(r"[/\\]", text)
    names = {text, parts[-1]}
    for part in parts:
        if part.startswith("models--"):
            names |= {part.removeprefix("models--").replace("--", "/"), part.split("--")[-1]}
    return names - {""}


def lookup(model_name_or_path: str | None) -> dict[str, Any] | None:
    """The entry for a hub id or local path (case-insensitive; also by the last path component),
    or None when the paper did not publish SEs for that model."""
    if not model_name_or_path:
        return None
    wanted = _names(model_name_or_path)
    for entry in entries():
        ids = {entry["name"].lower()} | {h.lower() for h in entry["hub_ids"]}
        ids |= {h.lower().rsplit("/", 1)[-1] for h in entry["hub_ids"]}
        if wanted & ids:
            return entry
    return None


def get(model_name_or_path: str) -> dict[str, Any]:
    """Like `lookup`, but a miss is a one-line error listing what is known."""
    entry = lookup(model_name_or_path)
    if entry is None:
        names = [e["name"] for e in entries()] + [h for e in entries() for h in e["hub_ids"]]
        raise UserError(f"no published Super Experts for '{model_name_or_path}'. "
                        f"{did_you_mean(str(model_name_or_path), names)}Known: "
                        f"{', '.join(e['name'] for e in entries())}.")  # fmt: skip
    return entry


def known_experts(entry: dict[str, Any]) -> list[Expert]:
    return experts_from_records(entry["super_experts"], f"known entry {entry['name']}")


def agreement(verdict: Verdict | list[Expert], entry: dict[str, Any]) -> dict[str, Any]:
    """Compare a run's SEs with the published ones: found (both), missing (published, not in the
    run), extra (in the run, not published); `agrees` when the sets are equal."""
    run = verdict.experts if isinstance(verdict, Verdict) else list(verdict)
    known = known_experts(entry)
    found = [x for x in known if x in run]
    result = {
        "model": entry["name"],
        "source": entry["source"],
        "known": experts_json(known),
        "found": experts_json(found),
        "missing": experts_json([x for x in known if x not in run]),
        "extra": experts_json([x for x in run if x not in known]),
        "agrees": set(run) == set(known),
    }
    alternative = entry.get("alternative_super_experts")
    if alternative and not result["agrees"]:
        other = experts_from_records(alternative["super_experts"], f"known entry {entry['name']}")
        result["matches_alternative"] = alternative["version"] if set(run) == set(other) else None
    return result


def agreement_line(result: dict[str, Any]) -> str:
    """One line for the console: whether the run found the published SEs."""
    source = f"{result['source']['paper']} {result['source']['version'].split()[0]}"
    known, found = result["known"], result["found"]
    if result["agrees"]:
        return (f"agrees with the published SEs of {result['model']} ({source}): "
                f"{len(found)} of {len(known)} found")  # fmt: skip
    if result.get("matches_alternative"):
        return (f"matches the {result['model']} list of the paper's {result['matches_alternative']}, "
                f"not the current {source} list")  # fmt: skip

    def fmt(records: list[dict[str, Any]]) -> str:
        return format_experts(experts_from_records(records, "agreement")) or "none"

    return (f"differs from the published SEs of {result['model']} ({source}): found {len(found)} of "
            f"{len(known)}; missing {fmt(result['missing'])}; extra {fmt(result['extra'])}")  # fmt: skip
