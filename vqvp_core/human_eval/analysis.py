"""The human-evaluation table (the paper's Table 1) from a study folder's judgments.

``analyze(package_dir)`` un-blinds every judgment with ``key.json`` (a "left" vote on a pair
whose left video is system A is a vote for A; "cant_tell" is indifference) and returns a
DataFrame, one row per outcome, in the paper's layout::

                            count  percent  ci_low  ci_high
    Prefer vqvp               266     65.7    60.9     70.1
    Prefer copy-last-frame     52     12.8     ...      ...
    Indifferent                87     21.5     ...      ...
    Total judgements          405    100.0     NaN      NaN

Percentages are of all judgements (as in the paper: 65.7 + 12.8 + 21.5 = 100).

Confidence intervals (``method``):

- ``"wilson"`` (default): the Wilson score interval of each proportion, treating the
  judgements as independent draws. It behaves well for small counts and proportions near 0 or
  1 (unlike the normal "Wald" interval) and never leaves [0, 100].
- ``"bootstrap"``: a cluster bootstrap over *pairs* (resample the pairs with replacement,
  ``n_boot`` times, seeded, percentile interval). Judgements of the same pair are correlated
  (some predictions are plainly better), so this interval is wider and more honest when a few
  pairs dominate; it needs several pairs to mean anything.

``df.attrs`` carries the rest: ``per_pair`` (a DataFrame: clip id, the system on each side,
the number of judgements and of each outcome, ``meets_min``), ``complete`` (every pair has at
least ``min_judgments``), ``min_judgments``, ``n_pairs``, ``n_raters``, ``names``, ``method``,
``confidence``, ``excluded_judgments`` (of raters not invited, or revoked: not counted) and
``binomial_p`` (exact two-sided binomial test of "A preferred" against "B
preferred" among the decisive judgements, H0: equally often; NaN without any).

``format_table(df)`` prints it; ``analyze`` also writes ``results.csv`` (atomically) into the
study folder unless ``write=False``. The database is only read (never created).
"""
from __future__ import annotations

import io
import math
import sqlite3
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd

from vqvp_core import atomic
from vqvp_core.human_eval.package import load_key, load_study
from vqvp_core.human_eval.store import judgments_path

__all__ = ["analyze", "format_table", "wilson_interval", "load_judgments", "RESULTS_NAME"]

RESULTS_NAME = "results.csv"
INDIFFERENT = "Indifferent"
TOTAL = "Total judgements"


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval (as fractions in [0, 1]) for k successes out of n; NaNs if n == 0."""
    if n <= 0:
        return (math.nan, math.nan)
    if not 0 <= k <= n:
        raise ValueError(f"k={k} outside [0, n={n}]")
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (max(0.0, centre - half), min(1.0, centre + half))


def load_judgments(package_dir, db_path=None) -> pd.DataFrame:
    """The judgments that count (id, rater, pair_id, choice, created, elapsed_ms): those of invited
    raters whose invitation is not revoked (a database from before invitations has none of
    those: its raters cannot be told from anyone). ``attrs["excluded"]`` counts the others.
    Empty without a database."""
    cols = ["id", "rater", "pair_id", "choice", "created", "elapsed_ms"]
    path = Path(db_path) if db_path is not None else judgments_path(package_dir)
    rows, excluded = [], 0
    if path.exists():
        conn = sqlite3.connect(str(path), timeout=30)
        try:
            tables = {t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            select = f"SELECT {', '.join('j.' + c for c in cols)} FROM judgments j"
            if "judgments" in tables:
                if "raters" in tables:
                    rows = conn.execute(f"{select} JOIN raters r ON r.rater = j.rater AND r.revoked IS NULL "
                                        "ORDER BY j.id").fetchall()
                excluded = conn.execute("SELECT COUNT(*) FROM judgments").fetchone()[0] - len(rows)
        finally:
            conn.close()
    df = pd.DataFrame(rows, columns=cols)
    df.attrs["excluded"] = int(excluded)
    return df


def _per_pair(judgments: pd.DataFrame, key: dict, names, min_judgments: int) -> pd.DataFrame:
    a, b = names
    rows = []
    by_pair = {pid: g for pid, g in judgments.groupby("pair_id")} if len(judgments) else {}
    unknown = set(by_pair) - set(key["pairs"])
    if unknown:
        raise ValueError(f"judgments for pairs not in key.json: {sorted(unknown)[:5]} "
                         "(database and study folder do not match)")
    for pid, k in key["pairs"].items():
        g = by_pair.get(pid)
        choices = g["choice"].value_counts() if g is not None else pd.Series(dtype=int)
        left, right = int(choices.get("left", 0)), int(choices.get("right", 0))
        cant = int(choices.get("cant_tell", 0))
        votes = {k["left"]: left, k["right"]: right}
        n = left + right + cant
        rows.append({"pair_id": pid, "clip_id": k.get("clip_id"), "left": k["left"],
                     "right": k["right"], "n": n, f"prefer_{a}": votes.get(a, 0),
                     f"prefer_{b}": votes.get(b, 0), "indifferent": cant,
                     "meets_min": n >= min_judgments})
    return pd.DataFrame(rows).set_index("pair_id")


def _bootstrap(counts: np.ndarray, confidence: float, n_boot: int, seed: int) -> np.ndarray:
    """Percentile intervals (fractions) of each outcome's share, resampling pairs. counts: (P, 3)."""
    keep = counts.sum(1) > 0
    counts = counts[keep]
    if len(counts) == 0:
        return np.full((3, 2), np.nan)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(counts), size=(n_boot, len(counts)))
    sums = counts[idx].sum(1).astype(float)  # (B, 3)
    shares = sums / sums.sum(1, keepdims=True)
    alpha = (1 - confidence) / 2
    return np.quantile(shares, [alpha, 1 - alpha], axis=0).T  # (3, 2)


def analyze(package_dir, *, db_path=None, method: str = "wilson", confidence: float = 0.95,
            n_boot: int = 10_000, seed: int = 0, write: bool = True,
            results_path=None) -> pd.DataFrame:
    """The Table-1 DataFrame for the study folder ``package_dir`` (see the module doc).

    db_path: the judgments database (default ``store.judgments_path(package_dir)``, beside it);
    results_path: where the CSV goes (default ``package_dir/results.csv``).
    """
    if method not in ("wilson", "bootstrap"):
        raise ValueError(f"method must be 'wilson' or 'bootstrap', not {method!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), not {confidence!r}")
    package_dir = Path(package_dir)
    study, key = load_study(package_dir), load_key(package_dir)
    names = tuple(key["names"])
    min_j = int(study["min_judgments"])
    judgments = load_judgments(package_dir, db_path)
    per_pair = _per_pair(judgments, key, names, min_j)

    a, b = names
    counts = per_pair[[f"prefer_{a}", f"prefer_{b}", "indifferent"]].to_numpy(dtype=np.int64)
    k = counts.sum(0)
    n = int(k.sum())
    if method == "wilson":
        ci = np.array([wilson_interval(int(x), n, confidence) for x in k])
    else:
        ci = _bootstrap(counts, confidence, n_boot, seed)
    labels = [f"Prefer {a}", f"Prefer {b}", INDIFFERENT]
    rows = {lab: {"count": int(x), "percent": 100 * x / n if n else math.nan,
                  "ci_low": 100 * lo, "ci_high": 100 * hi}
            for lab, x, (lo, hi) in zip(labels, k, ci)}
    rows[TOTAL] = {"count": n, "percent": 100.0 if n else math.nan,
                   "ci_low": math.nan, "ci_high": math.nan}
    df = pd.DataFrame.from_dict(rows, orient="index")[["count", "percent", "ci_low", "ci_high"]]
    df.index.name = "outcome"

    decisive = int(k[0] + k[1])
    if decisive:
        from scipy.stats import binomtest
        p_value = float(binomtest(int(k[0]), decisive, 0.5).pvalue)
    else:
        p_value = math.nan
    df.attrs.update({
        "per_pair": per_pair, "complete": bool(per_pair["meets_min"].all()),
        "min_judgments": min_j, "n_pairs": len(per_pair),
        "n_raters": int(judgments["rater"].nunique()) if len(judgments) else 0,
        "excluded_judgments": judgments.attrs["excluded"],
        "names": list(names), "method": method, "confidence": confidence,
        "binomial_p": p_value, "size": study.get("size"),
    })
    if write:
        buf = io.StringIO()
        df.to_csv(buf, float_format="%.4f")
        atomic.write_text(Path(results_path) if results_path is not None
                          else package_dir / RESULTS_NAME, buf.getvalue())
    return df


def _fmt_pct(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1f}%"


def _fmt_ci(lo, hi) -> str:
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in (lo, hi)):
        return ""
    return f"[{lo:.1f}, {hi:.1f}]"


def format_table(df: pd.DataFrame) -> str:
    """The table as text, laid out like the paper's Table 1 (one column per outcome)."""
    at = df.attrs
    conf = at.get("confidence", 0.95)
    outcomes = [i for i in df.index if i != TOTAL]
    cols = outcomes + [TOTAL]
    cells = {
        "": cols,
        "percent": [_fmt_pct(df.at[o, "percent"]) for o in outcomes] + [str(int(df.at[TOTAL, "count"]))],
        f"{round(100 * conf):d}% CI": [_fmt_ci(df.at[o, "ci_low"], df.at[o, "ci_high"]) for o in outcomes] + [""],
        "count": [str(int(df.at[o, "count"])) for o in outcomes] + [""],
    }
    widths = [max(len(c), *(len(cells[r][j]) for r in cells if r)) for j, c in enumerate(cols)]
    label_w = max(len(r) for r in cells)
    lines = []
    names = at.get("names")
    if names:
        size = at.get("size")
        res = f", {size[0]}x{size[1]}" if size else ""
        nr = at.get("n_raters", "?")
        lines.append(f"Human evaluation: {names[0]} vs {names[1]} "
                     f"({at.get('n_pairs', '?')} pairs, {nr} rater{'' if nr == 1 else 's'}{res})")
    for r, vals in cells.items():
        lines.append(r.ljust(label_w) + "  " + "  ".join(v.rjust(w) for v, w in zip(vals, widths)))
    method = at.get("method")
    if method:
        how = ("Wilson score interval per proportion" if method == "wilson"
               else "cluster bootstrap over pairs, percentile")
        lines.append(f"CI: {how}.")
    p = at.get("binomial_p")
    if p is not None and not (isinstance(p, float) and math.isnan(p)):
        lines.append(f"{outcomes[0][7:]} vs {outcomes[1][7:]} (decisive judgements only): "
                     f"two-sided exact binomial p = {p:.3g}")
    if at.get("excluded_judgments"):
        lines.append(f"Not counted: {at['excluded_judgments']} judgement(s) of raters not invited or revoked.")
    per_pair = at.get("per_pair")
    if per_pair is not None and len(per_pair):
        ok = int(per_pair["meets_min"].sum())
        state = "complete" if ok == len(per_pair) else "INCOMPLETE"
        lines.append(f"Pairs with >= {at.get('min_judgments')} judgements: {ok}/{len(per_pair)} "
                     f"({state}); judgements per pair: min {int(per_pair['n'].min())}, "
                     f"max {int(per_pair['n'].max())}")
        below = per_pair.index[~per_pair["meets_min"]].tolist()
        if below:
            more = f" ... (+{len(below) - 10})" if len(below) > 10 else ""
            lines.append("  below the minimum: " + ", ".join(below[:10]) + more)
    return "\n".join(lines)


if __name__ == "__main__":  # python -m vqvp_core.human_eval.analysis STUDY_DIR [--bootstrap]
    import argparse

    ap = argparse.ArgumentParser(description="Print the human-evaluation table of a study folder.")
    ap.add_argument("package_dir")
    ap.add_argument("--bootstrap", action="store_true", help="cluster bootstrap CIs over pairs")
    args = ap.parse_args()
    print(format_table(analyze(args.package_dir, method="bootstrap" if args.bootstrap else "wilson")))
