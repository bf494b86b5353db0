"""`sinks --stream`: sinks.json streamed layer by layer equals the in-memory run's; the router view is
not measured, and says so."""

from __future__ import annotations

import json

import pytest

from superexperts.cli import main
from superexperts.evaluate.sinks.router import COLUMNS
from superexperts.evaluate.sinks.study import ROUTER_NOT_STREAMED


def _sinks(demo_dir, out, *extra):
    argv = ["sinks", str(demo_dir), "--experts", "1:13,2:41", "--random", "1", "--samples", "2", "--seq-len", "32",
            "--dtype", "float32", "--out", str(out), *extra]  # fmt: skip
    assert main(argv) == 0
    return json.loads((out / "sinks.json").read_text())


@pytest.mark.parametrize("keys", [[], ["--sink-keys", "top2"]], ids=["first", "top2"])
def test_streamed_sinks_json_equals_in_memory(demo_dir, tmp_path, capsys, keys):
    in_memory = _sinks(demo_dir, tmp_path / "mem", "--device", "cpu", *keys)
    capsys.readouterr()
    streamed = _sinks(demo_dir, tmp_path / "stream", "--stream", *keys)
    printed = capsys.readouterr().out
    assert streamed["sink_keys"] == in_memory["sink_keys"] == ([0] if not keys else streamed["sink_keys"])
    assert len(streamed["sink_keys"]) == (2 if keys else 1)
    names = [c["name"] for c in in_memory["conditions"]]
    assert names == [c["name"] for c in streamed["conditions"]]
    assert names == ["original", "super-layer-1", "super-layer-2", "super", "random-0"]
    for got, want in zip(streamed["conditions"], in_memory["conditions"]):
        assert got["experts"] == want["experts"]
        assert got["sink_rate"] == want["sink_rate"], got["name"]
        for key in ("sink_mass", "max_hidden", "d_sink"):
            if key in want:
                assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-6), (got["name"], key)
        for row_got, row_want in zip(got["sink_mass_per_head"], want["sink_mass_per_head"]):
            assert row_got == pytest.approx(row_want, rel=1e-4, abs=1e-6), got["name"]
    # the SEs' ablation acts in the streamed run: the first-token sink collapses (demo: planted SEs)
    assert streamed["conditions"][0]["sink_rate"] > 0.5 and streamed["conditions"][3]["sink_rate"] == 0.0
    assert streamed["streamed"] is True and "streamed" not in in_memory
    assert streamed["router"] is None and streamed["not_measured"] == [ROUTER_NOT_STREAMED]
    assert in_memory["router"] and in_memory["not_measured"] == []
    assert (tmp_path / "stream" / "sinks_router.csv").read_text().strip() == ",".join(COLUMNS)
    for name in ("sinks_chain", "sinks_d_sink", "sinks_maps"):
        assert (tmp_path / "stream" / f"{name}.png").stat().st_size > 0
    assert f"not measured: {ROUTER_NOT_STREAMED}" in printed and "router L1/E13" not in printed


def test_help_says_what_stream_skips(capsys):
    with pytest.raises(SystemExit):
        main(["sinks", "--help"])
    assert "router view is not measured" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize(("extra", "message"), [
    (["--device-map", "auto"], "--stream and --device-map"),
    (["--allow-missing-weights"], "--allow-missing-weights needs the whole model"),
])  # fmt: skip
def test_stream_refusals(demo_dir, tmp_path, capsys, extra, message):
    out = tmp_path / "o"
    assert main(["sinks", str(demo_dir), "--experts", "1:13", "--stream", "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_stream_needs_a_local_folder(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["sinks", "some-org/some-model", "--experts", "1:13", "--stream", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--stream reads a local checkpoint folder" in err and len(err.splitlines()) == 1
    assert not out.exists()
