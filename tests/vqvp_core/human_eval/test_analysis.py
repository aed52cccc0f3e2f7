"""analyze / format_table on hand-made judgments: exact percentages, Wilson bounds, per-pair counts."""
from __future__ import annotations

import json
import math
import sqlite3

import pandas as pd
import pytest

from vqvp_core.human_eval.analysis import RESULTS_NAME, analyze, format_table, wilson_interval
from vqvp_core.human_eval.store import judgments_path, open_db


def make_study(path, sides: dict, min_judgments: int, names=("A", "B")):
    """A study folder without videos (analyze needs only study.json, key.json and the database)."""
    path.mkdir()
    (path / "study.json").write_text(json.dumps({"names": list(names), "min_judgments": min_judgments,
                                                 "size": [64, 64], "seed": 0}))
    other = {names[0]: names[1], names[1]: names[0]}
    (path / "key.json").write_text(json.dumps({"names": list(names), "pairs": {
        pid: {"left": left, "right": other[left], "clip_id": i, "index": i}
        for i, (pid, left) in enumerate(sides.items())}}))
    return path


def add_judgments(path, judgments, invited=True):
    """judgments: (rater, pair_id, choice), stored in the server's schema; their raters invited."""
    conn = open_db(judgments_path(path))
    if invited:
        conn.executemany("INSERT OR IGNORE INTO raters (rater, token_sha256, created) VALUES (?, ?, 't')",
                         [(r, f"digest-of-{r}") for r in dict.fromkeys(r for r, _, _ in judgments)])
    conn.executemany("INSERT INTO judgments (rater, pair_id, choice, created) VALUES (?, ?, ?, 't')",
                     judgments)
    conn.close()


def votes(pair_id, **counts):
    out, i = [], 0
    for choice, n in counts.items():
        for _ in range(n):
            out.append((f"r{i:02d}", pair_id, choice))
            i += 1
    return out


@pytest.fixture
def small(tmp_path):
    """p0: A on the left; p1: B on the left.
    p0: left 5 (A), right 2 (B), can't tell 1;  p1: left 1 (B), right 3 (A), can't tell 3.
    Totals: A 8, B 3, indifferent 4, n = 15."""
    d = make_study(tmp_path / "study", {"p0": "A", "p1": "B"}, min_judgments=7)
    add_judgments(d, votes("p0", left=5, right=2, cant_tell=1) + votes("p1", left=1, right=3, cant_tell=3))
    return d


def test_table_exact_percentages_and_wilson_bounds(small):
    df = analyze(small)
    assert list(df.index) == ["Prefer A", "Prefer B", "Indifferent", "Total judgements"]
    assert list(df.columns) == ["count", "percent", "ci_low", "ci_high"]
    assert df["count"].tolist() == [8, 3, 4, 15]
    assert df["percent"].tolist() == pytest.approx([800 / 15, 20.0, 400 / 15, 100.0])
    # Wilson 95% (z = 1.959964): reference values, also scipy's binomtest(...).proportion_ci("wilson")
    assert df.loc["Prefer A", ["ci_low", "ci_high"]].tolist() == pytest.approx([30.1170, 75.1905], abs=1e-4)
    assert df.loc["Prefer B", ["ci_low", "ci_high"]].tolist() == pytest.approx([7.0475, 45.1854], abs=1e-4)
    assert df.loc["Indifferent", ["ci_low", "ci_high"]].tolist() == pytest.approx([10.8975, 51.9504], abs=1e-4)
    assert math.isnan(df.loc["Total judgements", "ci_low"])
    assert df.attrs["binomial_p"] == pytest.approx(0.2265625)  # 8 of 11 decisive, two-sided
    assert df.attrs["n_raters"] == 8 and df.attrs["n_pairs"] == 2 and df.attrs["method"] == "wilson"


def test_wilson_matches_scipy_and_edges():
    from scipy.stats import binomtest

    for k, n in [(0, 4), (4, 4), (1, 3), (266, 405), (50, 100)]:
        ref = binomtest(k, n).proportion_ci(0.95, method="wilson")
        assert wilson_interval(k, n) == pytest.approx((ref.low, ref.high), abs=1e-12)
    assert all(math.isnan(x) for x in wilson_interval(0, 0))
    lo90, hi90 = wilson_interval(8, 15, confidence=0.90)
    lo95, hi95 = wilson_interval(8, 15)
    assert lo95 < lo90 < hi90 < hi95
    with pytest.raises(ValueError):
        wilson_interval(5, 4)


def test_per_pair_counts_and_min_judgments(small, tmp_path):
    per_pair = analyze(small).attrs["per_pair"]
    assert per_pair.loc["p0", ["n", "prefer_A", "prefer_B", "indifferent"]].tolist() == [8, 5, 2, 1]
    assert per_pair.loc["p1", ["n", "prefer_A", "prefer_B", "indifferent"]].tolist() == [7, 3, 1, 3]
    assert per_pair.loc["p0", "left"] == "A" and per_pair.loc["p1", "left"] == "B"
    assert per_pair["meets_min"].tolist() == [True, True]
    assert analyze(small).attrs["complete"] is True
    # one more pair without judgments: incomplete
    d = make_study(tmp_path / "three", {"p0": "A", "p1": "B", "p2": "A"}, min_judgments=8)
    add_judgments(d, votes("p0", left=5, right=2, cant_tell=1) + votes("p1", left=1, right=3, cant_tell=3))
    df = analyze(d)
    assert df.attrs["per_pair"]["meets_min"].tolist() == [True, False, False]
    assert df.attrs["per_pair"].loc["p2", "n"] == 0 and df.attrs["complete"] is False
    text = format_table(df)
    assert "1/3 (INCOMPLETE)" in text and "below the minimum: p1, p2" in text


def test_reproduces_the_papers_table_1(tmp_path):
    """15 raters x 27 pairs = 405 judgements: 266 / 52 / 87 -> 65.7% / 12.8% / 21.5%."""
    pairs = {f"p{i:02d}": ("VQ" if i % 2 else "Luc") for i in range(27)}
    d = make_study(tmp_path / "paper", pairs, min_judgments=13, names=("VQ", "Luc"))
    outcomes = ["vq"] * 266 + ["luc"] * 52 + ["same"] * 87
    judgments = []
    for j, outcome in enumerate(outcomes):
        rater, pid = f"rater{j % 15}", f"p{j // 15:02d}"
        vq_left = pairs[pid] == "VQ"
        choice = {"vq": "left" if vq_left else "right", "luc": "right" if vq_left else "left",
                  "same": "cant_tell"}[outcome]
        judgments.append((rater, pid, choice))
    add_judgments(d, judgments)
    df = analyze(d)
    assert df["percent"].round(1).tolist() == [65.7, 12.8, 21.5, 100.0]
    assert df.loc["Total judgements", "count"] == 405
    assert df.loc["Prefer VQ", ["ci_low", "ci_high"]].round(1).tolist() == [60.9, 70.1]
    assert df.attrs["complete"] and df.attrs["n_raters"] == 15 and df.attrs["n_pairs"] == 27
    text = format_table(df)
    for s in ("Prefer VQ", "Prefer Luc", "Indifferent", "Total judgements", "65.7%", "12.8%", "21.5%",
              "405", "[60.9, 70.1]", "27/27 (complete)", "Wilson"):
        assert s in text, s


def test_results_csv_written_atomically(small):
    df = analyze(small)
    csv = pd.read_csv(small / RESULTS_NAME, index_col=0)
    assert list(csv.index) == list(df.index) and csv["count"].tolist() == [8, 3, 4, 15]
    assert csv["percent"].tolist() == pytest.approx(df["percent"].tolist(), abs=1e-4)
    assert sorted(p.name for p in small.iterdir()) == ["key.json", RESULTS_NAME, "study.json"]
    (small / RESULTS_NAME).unlink()
    analyze(small, write=False)
    assert not (small / RESULTS_NAME).exists()
    analyze(small, results_path=small.parent / "elsewhere.csv")
    assert not (small / RESULTS_NAME).exists() and (small.parent / "elsewhere.csv").exists()


def test_database_outside_the_study(small, tmp_path):
    moved = tmp_path / "db" / "j.sqlite"
    moved.parent.mkdir()
    judgments_path(small).rename(moved)
    assert analyze(small, write=False)["count"].tolist() == [0, 0, 0, 0]
    assert analyze(small, db_path=moved, write=False)["count"].tolist() == [8, 3, 4, 15]


def test_no_judgments_yet(tmp_path):
    d = make_study(tmp_path / "empty", {"p0": "A"}, min_judgments=13)
    df = analyze(d)
    assert df["count"].tolist() == [0, 0, 0, 0] and df["percent"].isna().all()
    assert df.attrs["complete"] is False and df.attrs["n_raters"] == 0
    assert not judgments_path(d).exists()  # analysis only reads
    assert "n/a" in format_table(df)


def test_bootstrap_over_pairs(small):
    a = analyze(small, method="bootstrap", n_boot=2000, seed=1, write=False)
    b = analyze(small, method="bootstrap", n_boot=2000, seed=1, write=False)
    pd.testing.assert_frame_equal(a, b)
    assert a["count"].tolist() == [8, 3, 4, 15]
    for row in ("Prefer A", "Prefer B", "Indifferent"):
        lo, p, hi = a.loc[row, ["ci_low", "percent", "ci_high"]]
        assert 0 <= lo <= p <= hi <= 100
    # with two pairs the resampled shares take only the values of p0+p0, p0+p1, p1+p1
    assert a.loc["Prefer A", "ci_low"] == pytest.approx(300 / 7) and a.loc["Prefer A", "ci_high"] == pytest.approx(62.5)
    assert "bootstrap" in format_table(a)
    with pytest.raises(ValueError, match="method"):
        analyze(small, method="wald")


def test_judgments_for_unknown_pairs_are_an_error(small):
    add_judgments(small, [("zed", "p7", "left")])
    with pytest.raises(ValueError, match="not in key.json"):
        analyze(small)


def test_judgments_of_raters_not_invited_do_not_count(small):
    add_judgments(small, [("ghost", "p0", "left"), ("ghost", "p1", "left")], invited=False)
    df = analyze(small, write=False)
    assert df.loc["Total judgements", "count"] == 15 and df.attrs["excluded_judgments"] == 2
    assert "Not counted: 2 judgement(s)" in format_table(df)
