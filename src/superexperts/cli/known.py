"""`superexperts known [MODEL]`: the Super Experts published in the paper."""

from __future__ import annotations

import argparse
import json
from typing import Any

HELP = "list the Super Experts published in the paper (arXiv 2507.23279)"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "known", help=HELP,
        description="List all published SE entries, or show one MODEL (hub id, local path or folder name).",
    )  # fmt: skip
    p.add_argument("model", nargs="?", metavar="MODEL",
                   help="e.g. Qwen/Qwen3-30B-A3B or /models/Mixtral-8x7B-v0.1")
    p.add_argument("--json", action="store_true", help="print the entries as JSON")
    p.set_defaults(run=run)


def _detail(entry: dict[str, Any]) -> str:
    from ..identify.known import known_experts
    from ..models.experts import experts_from_records, format_experts

    t, s = entry.get("table1") or {}, entry["source"]
    lines = [
        f"{entry['name']}: Super Experts {format_experts(known_experts(entry))}",
        f"  hub ids: {', '.join(entry['hub_ids'])}",
        f"  source: {s['paper']} {s['version']}, {s['tables']}",
    ]
    if t:
        top = ", ".join(f"{v:g}" for v in t["top_values"])
        lines.append(f"  Table 1: {t['experts']} experts, {t['super_experts']} SEs; top a[l,e] {top}; "
                     f"P99.5 {t['percentile_99_5']:g}, max/10 {t['max_over_10']:g}")  # fmt: skip
    if "alternative_super_experts" in entry:
        alt = entry["alternative_super_experts"]
        listed = format_experts(experts_from_records(alt["super_experts"], entry["name"]))
        lines.append(f"  paper {alt['version']} listed: {listed}")
    lines.append(f"  notes: {entry['notes']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..identify.known import entries, get, known_experts
    from ..models.experts import format_experts

    chosen = [get(args.model)] if args.model else entries()
    if args.json:
        print(json.dumps(chosen if not args.model else chosen[0], indent=2))
    elif args.model:
        print(_detail(chosen[0]))
    else:
        for entry in chosen:
            experts = format_experts(known_experts(entry))
            print(f"{entry['name']:<18} {experts:<40} {', '.join(entry['hub_ids'])}")
    return 0
