"""Issue 12 as a user meets it: a saved Qwen3-style checkpoint with three planted SEs (layers 1-3,
one channel) and an independent outlier ~7x larger in the last layer, through `profile` and
`prune-eval --from RUN --causal`. Every planted SE must come out causal at its own layers, the
outlier not, and the report must show the per-layer evidence."""

from __future__ import annotations

import json

import planted
import pytest
import torch

from report_helpers import parse_page  # tests/ is on sys.path (conftest.py)
from superexperts.cli import main
from superexperts.models.demo import (
    DEMO_CHANNEL,
    DEMO_OUTLIER,
    DEMO_SUPER_EXPERTS,
    OUTLIER_CHANNEL,
    QUERY_CHANNEL,
    build_demo,
)

THIRD_SE = (3, 30)
SES = {*DEMO_SUPER_EXPERTS, THIRD_SE}


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    """The demo with a third chain SE (layer 3, amplifying channel DEMO_CHANNEL) and its late outlier
    made 200x larger, saved as an ordinary checkpoint folder (not recognised as the demo)."""
    model, tokenizer = build_demo()
    planted.plant_expert(model, *THIRD_SE, {DEMO_CHANNEL: 1.0}, DEMO_CHANNEL, 10.0, query=QUERY_CHANNEL)
    layer, expert = DEMO_OUTLIER
    with torch.no_grad():
        model.model.layers[layer].mlp.experts.down_proj[expert, OUTLIER_CHANNEL, 0] *= 200
    folder = tmp_path_factory.mktemp("heldout") / "ckpt"
    model.config._name_or_path = "heldout"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_every_planted_se_is_causal_at_its_own_layers(heldout, tmp_path, capsys):
    run = tmp_path / "run"
    common = ["--seq-len", "64", "--samples", "4", "--device", "cpu"]
    assert main(["profile", str(heldout), "--out", str(run), "--no-report", *common]) == 0
    # On 512 experts P99.5 lets at most ~2 through, so the SEs are named (the run still picks the others).
    experts = ",".join(f"{layer}:{e}" for layer, e in sorted(SES))
    assert (
        main(
            [
                "prune-eval",
                "--from",
                str(run),
                "--experts",
                experts,
                "--causal",
                "1",
                "--generate",
                "The",
                "--max-new-tokens",
                "2",
                *common,
            ]
        )
        == 0
    )
    causal = json.loads((run / "prune_eval.json").read_text())["causal"]
    rows = {(c["layer"], c["expert"]): c for c in causal["candidates"]}
    assert DEMO_OUTLIER in rows and SES <= set(rows)
    num_layers = len(rows[DEMO_OUTLIER]["max_original"])
    outlier_peak = rows[DEMO_OUTLIER]["channel_original"][-1]
    assert outlier_peak > 5 * max(rows[se]["channel_original"][-1] for se in SES)  # it dominates max |h|
    for se in SES:
        assert rows[se]["causal"] and rows[se]["causal_layers"] == list(range(se[0], num_layers))
        assert rows[se]["channel"] == DEMO_CHANNEL
        assert rows[se]["ma_drop"] < causal["threshold"]  # what the old model-wide measure concluded
    assert not rows[DEMO_OUTLIER]["causal"] and rows[DEMO_OUTLIER]["channel_drop"][-1] > 0.9
    assert {k for k, c in rows.items() if c["causal"]} == SES
    printed = capsys.readouterr().out
    assert f"{THIRD_SE[0]}:{THIRD_SE[1]}" in printed and "CAUSAL at layers 3-7" in printed

    page = (run / "report.html").read_text()
    table = parse_page(page).tables["causal"]
    header, body = table[0], table[1 : 1 + len(rows)]
    verdicts = {row[1]: row[header.index("causal layers")] for row in body}
    assert {k for k, v in verdicts.items() if v != "none"} == {f"{layer}:{e}" for layer, e in SES}
    assert verdicts["1:13"] == f"1-{num_layers - 1}"
    assert (run / "figures" / "causal.png").is_file() and 'alt="Per-layer drop' in page
