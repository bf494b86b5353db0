"""compare: Jaccard and Spearman against direct computations; the CLI's exit codes and files."""

from __future__ import annotations

import json
from itertools import combinations

import numpy as np
import pytest

from expert_tables import background, expert_table, save_table_run, snapshot
from superexperts.cli import main
from superexperts.identify.compare import RunSEs, compare, jaccard, spearman

LAYERS = 8


def _loop_ranks(x):
    """Average ranks (1-based) by counting: rank = #smaller + (#equal + 1) / 2."""
    return np.array([sum(v < xi for v in x) + (sum(v == xi for v in x) + 1) / 2 for xi in x])


def _loop_spearman(x, y):
    rx, ry = _loop_ranks(x), _loop_ranks(y)
    return float(np.corrcoef(rx, ry)[0, 1])


def test_spearman_matches_a_rank_loop_with_ties():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 6, 40).astype(float)  # many ties
    y = x + rng.normal(0, 2, 40)
    assert spearman(x, y) == pytest.approx(_loop_spearman(x, y))
    assert spearman(x, x ** 3) == pytest.approx(1.0)
    assert spearman(x, -x) == pytest.approx(-1.0)
    assert np.isnan(spearman([1.0], [2.0])) and np.isnan(spearman([1.0, 1.0], [1.0, 2.0]))


def test_jaccard():
    assert jaccard({(1, 2), (2, 3)}, {(1, 2), (4, "shared")}) == 1 / 3
    assert jaccard(set(), set()) == 1.0 and jaccard({(1, 2)}, set()) == 0.0


def _pair_of_tables():
    a = background(LAYERS, 64, seed=1)
    a[1, 3], a[2, 5] = 800.0, 120.0
    b = a * np.random.default_rng(2).lognormal(0, 0.3, a.shape)
    b[2, 5] = 20.0
    return a, b


def test_compare_on_common_keys_only():
    a, b = _pair_of_tables()
    table_b = expert_table(b[:, :16], shared={1: 5.0})  # run B measured fewer experts
    result = compare([RunSEs("a", expert_table(a, shared={1: 4.0}), [(1, 3), (2, 5)]),
                      RunSEs("b", table_b, [(1, 3), (1, "shared")])])
    row = result.pairs.iloc[0]
    common_a = np.concatenate([a[:, :16].ravel(), [4.0]])
    common_b = np.concatenate([b[:, :16].ravel(), [5.0]])
    assert row["common_experts"] == LAYERS * 16 + 1
    assert row["spearman"] == pytest.approx(_loop_spearman(common_a, common_b))
    assert row["jaccard"] == pytest.approx(1 / 3) and row["only_a"] == "2:5" and row["only_b"] == "1:shared"
    assert not result.agree
    assert list(result.experts["expert"]) == [3, 5, "shared"]
    assert json.loads(json.dumps(result.to_json(), default=str))["agree"] is False


def test_compare_three_runs_has_every_pair():
    a, b = _pair_of_tables()
    runs = [RunSEs(n, expert_table(t), [(1, 3)]) for n, t in (("x", a), ("y", b), ("z", a * 2))]
    result = compare(runs)
    assert result.agree and len(result.pairs) == 3
    assert list(zip(result.pairs["run_a"], result.pairs["run_b"])) == list(combinations("xyz", 2))
    assert result.pairs.iloc[1]["spearman"] == pytest.approx(1.0)  # x vs z: same ranks


@pytest.fixture
def run_dirs(tmp_path):
    a, b = _pair_of_tables()
    save_table_run(tmp_path / "c4", expert_table(a), LAYERS)
    save_table_run(tmp_path / "wiki", expert_table(b), LAYERS)  # paper rule loses 2:5 here
    save_table_run(tmp_path / "c4-again", expert_table(a * 1.01), LAYERS)
    return tmp_path


def test_cli_exit_0_when_the_se_sets_agree(run_dirs, capsys):
    out = run_dirs / "cmp"
    assert main(["compare", str(run_dirs / "c4"), str(run_dirs / "c4-again"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "agree: the same SEs in every run" in printed
    data = json.loads((out / "compare.json").read_text())
    assert data["agree"] is True and data["pairs"][0]["jaccard"] == 1.0
    assert data["meta"]["command"] == "compare"
    assert (out / "compare_scatter.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (out / "compare_scatter.svg").read_bytes()[:2000]


def test_cli_exit_1_when_the_se_sets_differ(run_dirs, capsys):
    assert main(["compare", str(run_dirs / "c4"), str(run_dirs / "wiki")]) == 1
    printed = capsys.readouterr().out
    assert "differ: the runs found different SEs" in printed and "2:5 / -" in printed
    # the same runs agree under a criterion that only keeps the dominant expert
    assert main(["compare", str(run_dirs / "c4"), str(run_dirs / "wiki"), "--criterion", "paper",
                 "--param", "max_fraction=0.5"]) == 0


@pytest.mark.parametrize("extra, message", [
    (["--criterion", "papr"], "Did you mean 'paper'?"),
    (["--param", "percentile=0"], "percentile=0.0 is out of range"),
])  # fmt: skip
def test_cli_bad_arguments_write_nothing(run_dirs, capsys, extra, message):
    out = run_dirs / "cmp"
    assert main(["compare", str(run_dirs / "c4"), str(run_dirs / "wiki"), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not out.exists()


def test_cli_damaged_run_is_one_line_error(run_dirs, capsys):
    (run_dirs / "wiki" / "super_experts.json").write_text("{\"super_experts\": [")
    before = snapshot(run_dirs / "wiki")
    out = run_dirs / "cmp"
    assert main(["compare", str(run_dirs / "c4"), str(run_dirs / "wiki"), "--out", str(out)]) == 2
    assert "damaged" in capsys.readouterr().err and not out.exists()
    assert snapshot(run_dirs / "wiki") == before
    assert main(["compare", str(run_dirs / "c4")]) == 2
    assert "at least two" in capsys.readouterr().err
