"""Paired comparisons of two inits over concepts: win rate, Wilcoxon signed-rank test and a
bootstrap confidence interval, so a table says how sure a difference is (scipy, numpy)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

#: hold-out kinds in the order tables list them; "all" is their union
SPLITS = ("interpolation", "extrapolation", "composition", "family")


def paired(
    candidate: Sequence[float], other: Sequence[float], *, higher_is_better: bool, seed: int = 0
) -> dict[str, Any]:
    """How ``candidate`` compares with ``other`` on the same concepts.

    ``advantage`` per concept is how much better the candidate is (positive: better, in the
    metric's units). Returns the concepts, wins, ties, the win rate, the median advantage with
    a 95% bootstrap interval (2,000 resamples) and the two-sided Wilcoxon signed-rank p-value.
    """
    import numpy as np
    from scipy.stats import wilcoxon

    sign = 1.0 if higher_is_better else -1.0
    adv = np.array([sign * (c - o) for c, o in zip(candidate, other, strict=True)], dtype=float)
    n = len(adv)
    out: dict[str, Any] = {"n": n, "wins": int((adv > 0).sum()), "ties": int((adv == 0).sum())}
    out["win_rate"] = out["wins"] / n if n else None
    if n == 0:
        return {**out, "median_advantage": None, "ci95": None, "p_wilcoxon": None}
    rng = np.random.default_rng(seed)
    boots = np.median(adv[rng.integers(0, n, size=(2000, n))], axis=1)
    out["median_advantage"] = float(np.median(adv))
    out["ci95"] = [float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))]
    nonzero = adv[adv != 0]
    out["p_wilcoxon"] = float(wilcoxon(nonzero).pvalue) if len(nonzero) >= 2 else None
    return out


def by_split(
    rows: Sequence[dict[str, Any]],
    inits: Sequence[str],
    key: str,
    *,
    higher_is_better: bool,
    candidate: str = "generated",
) -> dict[str, Any]:
    """Per hold-out kind (and all together): each init's median value, and ``candidate``
    against every other init (:func:`paired`)."""
    groups = {s: [r for r in rows if r.get("holdout") == s] for s in SPLITS}
    groups = {k: v for k, v in groups.items() if v}
    groups["all"] = list(rows)
    out: dict[str, Any] = {}
    for split, members in groups.items():
        entry: dict[str, Any] = {"concepts": len(members), "inits": {}}
        for name in inits:
            values = [r["inits"][name][key] for r in members]
            stat: dict[str, Any] = {"value": median_iqr(values)}
            if candidate in inits and name != candidate and all(v is not None for v in values):
                mine = [r["inits"][candidate][key] for r in members]
                stat[f"{candidate}_vs"] = paired(mine, values, higher_is_better=higher_is_better)
            entry["inits"][name] = stat
        out[split] = entry
    return out


def median_iqr(values: Sequence[float | None]) -> dict[str, float | None]:
    """Median, quartiles and count of the values that are not None or NaN."""
    import statistics

    vals = sorted(v for v in values if v is not None and not math.isnan(v))
    if not vals:
        return {"median": None, "q1": None, "q3": None, "n": 0}
    if len(vals) == 1:
        return {"median": vals[0], "q1": vals[0], "q3": vals[0], "n": 1}
    q = statistics.quantiles(vals, n=4, method="inclusive")
    return {"median": statistics.median(vals), "q1": q[0], "q3": q[2], "n": len(vals)}


def fmt_p(p: float | None) -> str:
    if p is None or math.isnan(p):
        return "-"
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"
