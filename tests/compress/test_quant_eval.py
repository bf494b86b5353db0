"""quant-eval end to end on the demo: every condition with finite numbers, the planted SEs' story,
the model left unmodified, the report section, and bad input refused with nothing written."""

from __future__ import annotations

import json
import math

import pytest
from test_fake import same_state, snapshot

from superexperts.capture.profile import profile
from superexperts.cli import main
from superexperts.identify.profile_run import save_run
from superexperts.identify.rules import identify
from superexperts.models.adapters import map_model
from superexperts.models.demo import DEMO_SUPER_EXPERTS, build_demo

FAST = ["--seq-len", "32", "--max-windows", "1", "--samples", "2", "--device", "cpu"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """A profile run folder of the demo (what `superexperts profile` writes), with its SEs."""
    from superexperts.capture.data import calibration

    model, tokenizer = build_demo()
    prof = profile(model, calibration(None, tokenizer, seq_len=32, samples=2).input_ids)
    prof.meta["synthetic"] = True
    run = tmp_path_factory.mktemp("qe") / "run"
    save_run(run, prof, identify(prof.expert_stats, prof.num_layers, "paper"))
    return run


def finite(values) -> bool:
    return all(isinstance(v, float) and math.isfinite(v) for v in values)


def test_all_conditions_from_a_run_folder(demo_run, capsys):
    assert main(["quant-eval", "--from", str(demo_run), "--random", "2", "--bits", "4", *FAST]) == 0
    doc = json.loads((demo_run / "quant_eval.json").read_text())
    names = [c["name"] for c in doc["conditions"]]
    assert names == ["original", "all", "protect-super", "protect-random-0", "protect-random-1", "se-only"]
    by = {c["name"]: c for c in doc["conditions"]}
    ses = {(s["layer"], s["expert"]) for s in doc["super_experts"]}
    assert ses == set(DEMO_SUPER_EXPERTS)
    assert {(e["layer"], e["expert"]) for e in by["protect-super"]["protected"]} == ses
    assert {(e["layer"], e["expert"]) for e in by["se-only"]["quantized_only"]} == ses
    for name in ("protect-random-0", "protect-random-1"):
        chosen = {(e["layer"], e["expert"]) for e in by[name]["protected"]}
        assert len(chosen) == len(ses) and not chosen & ses
    total = 8 * 64  # the demo: 8 MoE layers x 64 routed experts, no shared experts
    assert [by[n]["quantized_experts"] for n in names] == [0, total, total - 2, total - 2, total - 2, 2]
    for c in doc["conditions"]:
        assert finite([c["perplexity"]]) and finite(c["massive_retention"]) and len(c["massive_retention"]) == 8
        assert finite([s["relative_change"] for s in c["super_experts"]]) and finite(c["sink_mass"])
        assert (c["d_sink"] is None) == (c["name"] == "original") and finite(c["d_sink"] or [0.0])
    assert by["original"]["massive_retention"] == [1.0] * 8
    # The planted story at 4 bits: rounding the SEs' super weights costs massive activation; sparing them keeps it.
    worst = {n: min(by[n]["massive_retention"][1:]) for n in names}
    assert worst["protect-super"] > worst["all"] and worst["protect-super"] > worst["protect-random-0"]
    assert worst["se-only"] == pytest.approx(worst["all"], rel=1e-3)
    assert doc["scheme"]["bits"] == 4 and doc["scheme"]["library"].startswith("compressed-tensors")
    assert set(doc["summary"]["protect-random"]["massive_retention"]) == {"mean", "min", "max"}
    assert doc["command"] == "quant-eval" and "torch" in doc["versions"] and doc["data"]["calibration"]["sha256"]
    assert "What protection buys" in (demo_run / "report.html").read_text()
    printed = capsys.readouterr().out
    assert "protect-super" in printed and "quant_eval.json" in printed


def test_conditions_leave_the_model_unmodified():
    from superexperts.capture.data import calibration
    from superexperts.compress.quant import Scheme
    from superexperts.compress.quant_eval import add_sinks, quant_conditions, run_quant_conditions
    from superexperts.evaluate.ablate.conditions import EvalPlan

    model, tokenizer = build_demo()
    calib = calibration(None, tokenizer, seq_len=32, samples=1).input_ids
    before = snapshot(model)
    reference = profile(model, calib)
    conds = quant_conditions(map_model(model), list(DEMO_SUPER_EXPERTS))
    scheme = Scheme(bits=3, group_size=16, act_bits=8)
    results = run_quant_conditions(model, tokenizer, conds, EvalPlan(ppl_ids=calib[0], seq_len=32), scheme, calib,
                                   reference, list(DEMO_SUPER_EXPERTS))  # fmt: skip
    assert add_sinks(model, results, conds, scheme, calib) == 1
    assert same_state(model, before)
    again = run_quant_conditions(model, tokenizer, conds[:1], EvalPlan(ppl_ids=calib[0], seq_len=32), scheme, calib,
                                 reference, [])  # fmt: skip
    assert again[0]["perplexity"] == results[0]["perplexity"]
    assert results[1]["perplexity"] != results[0]["perplexity"]  # quantization did change the model


@pytest.mark.parametrize("extra, message", [
    (["--bits", "5"], "--bits 5 is not supported"),
    (["--act-bits", "3"], "--act-bits 3"),
    (["--group-size", "7"], "--group-size 7 does not divide"),
    (["--random", "-1"], "--random must be >= 0"),
    (["--from", "no/such/run"], "not found"),
])  # fmt: skip
def test_bad_input_writes_nothing(tmp_path, capsys, extra, message):
    out = tmp_path / "qe"
    assert main(["quant-eval", *FAST, "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_run_folder_without_super_experts(demo_run, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("profile.json", "expert_stats.csv"):
        (run / name).write_bytes((demo_run / name).read_bytes())
    saved = json.loads((demo_run / "super_experts.json").read_text())
    (run / "super_experts.json").write_text(json.dumps(saved | {"super_experts": []}))
    assert main(["quant-eval", "--from", str(run), *FAST]) == 2
    assert "lists no Super Experts" in capsys.readouterr().err
    assert not (run / "quant_eval.json").exists()


def test_conditions_with_a_shared_super_expert():
    import families
    from superexperts.compress.quant import all_experts
    from superexperts.compress.quant_eval import quant_conditions

    model_map = map_model(families.build("deepseek_v3"))
    ses = [(1, "shared"), (2, 3)]
    everything = all_experts(model_map)
    assert len(everything) == 3 * 8 + 3 and (1, "shared") in everything  # 3 MoE layers, each with a shared expert
    conds = {c.name: c for c in quant_conditions(model_map, ses, n_random=3, seed=7)}
    assert list(conds) == ["original", "all", "protect-super", "protect-random-7", "protect-random-8",
                           "protect-random-9", "se-only"]  # fmt: skip
    assert conds["original"].quantized(everything) == [] and conds["all"].quantized(everything) == everything
    assert conds["protect-super"].quantized(everything) == [x for x in everything if x not in ses]
    assert conds["se-only"].quantized(everything) == ses
    for seed in (7, 8, 9):
        kept = conds[f"protect-random-{seed}"].protected
        assert len(kept) == 2 and not set(kept) & set(ses) and all(isinstance(e, int) for _, e in kept)


def test_device_map_offload_gives_the_in_memory_conditions(demo_dir, tmp_path):
    """--device-map FILE with the odd layers (SE layer 1 among them) offloaded to disk: every condition's
    numbers equal the in-memory run's, so the offloaded experts were really quantized, and restored
    between conditions (protect-super after all would otherwise keep the SEs quantized)."""
    from file_trees import odd_layers_on_disk
    from superexperts.models.demo import heldout_path

    common = ["quant-eval", str(demo_dir), "--ppl", str(heldout_path()), "--seq-len", "32", "--max-windows", "1",
              "--samples", "2", "--dtype", "float32", "--bits", "3", "--act-bits", "8", "--random", "1"]  # fmt: skip
    placement = str(odd_layers_on_disk(demo_dir, tmp_path / "map.json"))
    assert main([*common, "--device", "cpu", "--out", str(tmp_path / "mem")]) == 0
    assert main([*common, "--device-map", placement, "--out", str(tmp_path / "map")]) == 0
    in_memory, placed = (json.loads((tmp_path / d / "quant_eval.json").read_text()) for d in ("mem", "map"))
    assert [c["name"] for c in placed["conditions"]] == [c["name"] for c in in_memory["conditions"]]
    for got, want in zip(placed["conditions"], in_memory["conditions"]):
        assert got["quantized_experts"] == want["quantized_experts"]
        for key in ("perplexity", "massive_retention", "sink_mass"):
            assert got[key] == pytest.approx(want[key], rel=1e-5), (want["name"], key)
        assert got["d_sink"] == (None if want["d_sink"] is None else pytest.approx(want["d_sink"], rel=1e-4, abs=1e-6))
        assert [s["relative_change"] for s in got["super_experts"]] == pytest.approx(
            [s["relative_change"] for s in want["super_experts"]], rel=1e-4, abs=1e-6)
    by = {c["name"]: c for c in in_memory["conditions"]}
    assert by["all"]["perplexity"] != by["original"]["perplexity"]
    assert placed["model"]["device_map"]["placement"]["model.layers.1"] == "disk"
