"""Is the difference real? Summaries of a group of runs (one setup, several seeds) and
honest comparisons between groups, or between a group and one course figure.

Choices, and why:
- A group's spread is the sample sd (ddof=1) and its 95 % interval for the mean uses
  Student's t with n−1 degrees of freedom: with 3–10 seeds the normal 1.96 would be
  far too narrow.
- Two groups are compared with Welch's t-test (and Welch's interval for B − A): the
  groups are small and nothing says two setups vary equally from seed to seed (a
  batch-normed net can be much steadier than a plain one), so the pooled-variance
  t-test's equal-variance assumption is not ours to make.
- With 5 seeds or fewer in a group the t-test's normality assumption cannot be
  checked at all, so the p-value then comes from an exact permutation test
  (scipy.stats.permutation_test enumerating every relabelling of the runs; the
  statistic is the difference of means). Its price is honesty about tiny n: with
  3 + 3 seeds there are only 20 relabellings, so p can never go below 0.1 and the
  verdict stays "no evidence" however large the gap. Welch's figures are still
  reported beside it.
- A group against a single course figure (one run, no spread of its own) is a
  one-sample t-test of the group's mean against that number.
- "Seeds needed" is a power calculation with scipy's noncentral t distribution
  (exact for the t-test, no normal approximation): the smallest n per group for
  which a two-sided t-test at α = 0.05 detects a true gap of the observed size with
  probability 0.8, taking the observed sd as the true one. It is an estimate (the
  observed gap and sd are themselves noisy), meant to say "5 seeds is far too few".
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
from scipy import stats as _st

ALPHA = 0.05
POWER = 0.8
MIN_EXACT_N = 4           # per group: the fewest runs with which the exact test can say p < 0.05
EXACT_MAX_N = 5           # per group: at or below, the p-value is an exact permutation test
MAX_SEEDS_NEEDED = 10_000  # beyond this the power search gives up (None: "more than 10,000")


def _clean(values: Iterable[float]) -> np.ndarray:
    a = np.asarray([float(v) for v in values], dtype=float)
    if not np.all(np.isfinite(a)):
        raise ValueError("values must be finite numbers")
    return a


def _f(x) -> float | None:
    """JSON-safe float (JSON has no NaN)."""
    return None if x is None or not math.isfinite(float(x)) else float(x)


def summarize(values: Sequence[float]) -> dict:
    """values, n, mean, sd (ddof=1), sem and the 95 % interval of the mean (Student t, n−1 df).

    One value has no spread: sd, sem and ci95 are None."""
    a = _clean(values)
    n = len(a)
    if n == 0:
        return {"values": [], "n": 0, "mean": None, "sd": None, "sem": None, "ci95": None}
    mean = float(a.mean())
    if n == 1:
        return {"values": a.tolist(), "n": 1, "mean": mean, "sd": None, "sem": None, "ci95": None}
    sd = float(a.std(ddof=1))
    sem = sd / math.sqrt(n)
    h = float(_st.t.ppf(1 - ALPHA / 2, n - 1)) * sem
    return {"values": a.tolist(), "n": n, "mean": mean, "sd": sd, "sem": sem, "ci95": [mean - h, mean + h]}


def welch(a: Sequence[float], b: Sequence[float]) -> dict:
    """Welch's t for B − A: t, df (Welch–Satterthwaite), two-sided p and the 95 % interval of the gap."""
    a, b = _clean(a), _clean(b)
    diff = float(b.mean() - a.mean())
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:  # no spread in either group: the gap is exactly what it is
        p = 1.0 if diff == 0 else 0.0
        return {"t": None, "df": None, "p_value": p, "ci95": [diff, diff], "se": 0.0}
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    res = _st.ttest_ind(b, a, equal_var=False)
    h = float(_st.t.ppf(1 - ALPHA / 2, df)) * se
    return {"t": float(res.statistic), "df": float(df), "p_value": float(res.pvalue),
            "ci95": [diff - h, diff + h], "se": se}


def permutation_p(a: Sequence[float], b: Sequence[float]) -> dict:
    """Two-sided p of the difference of means over every relabelling of the runs (exact)."""
    a, b = _clean(a), _clean(b)
    n_perm = math.comb(len(a) + len(b), len(a))
    if np.all(np.concatenate([a, b]) == a[0]):
        return {"p_value": 1.0, "permutations": n_perm}  # all equal: no relabelling can differ
    res = _st.permutation_test((b, a), lambda x, y, axis: np.mean(x, axis=axis) - np.mean(y, axis=axis),
                               permutation_type="independent", vectorized=True, n_resamples=np.inf,
                               alternative="two-sided")
    return {"p_value": float(min(1.0, res.pvalue)), "permutations": n_perm}


def seeds_needed(diff: float, sd: float | None, *, one_sample: bool = False, alpha: float = ALPHA,
                 power: float = POWER) -> int | None:
    """Smallest n (per group) for which a two-sided t-test finds a true gap `diff` with this power,
    when the seed-to-seed sd is `sd` (noncentral t). None when the gap is 0 or n would exceed
    MAX_SEEDS_NEEDED; 2 when there is no spread at all."""
    if diff is None or sd is None or not math.isfinite(diff) or not math.isfinite(sd) or diff == 0:
        return None
    if sd == 0:
        return 2
    d = abs(diff) / sd

    def power_at(n: int) -> float:
        df = n - 1 if one_sample else 2 * n - 2
        nc = d * math.sqrt(n if one_sample else n / 2)
        tc = _st.t.ppf(1 - alpha / 2, df)
        return float(_st.nct.sf(tc, df, nc) + _st.nct.cdf(-tc, df, nc))

    lo = 2
    if power_at(lo) >= power:
        return lo
    hi = lo
    while power_at(hi) < power:          # power rises with n: double, then bisect
        if hi >= MAX_SEEDS_NEEDED:
            return None
        lo, hi = hi, min(hi * 2, MAX_SEEDS_NEEDED)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if power_at(mid) < power else (lo, mid)
    return hi


def _pooled_sd(a: np.ndarray, b: np.ndarray) -> float:
    return math.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))


def compare(a: Sequence[float], b: Sequence[float]) -> dict:
    """Group B against group A (each ≥ 2 values): difference B − A of the means, its 95 % interval
    (Welch), the p-value of the test that fits (see the module doc), verdict and seeds needed."""
    a, b = _clean(a), _clean(b)
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"each group needs at least 2 runs to compare (got {len(a)} and {len(b)})")
    w = welch(a, b)
    diff = float(b.mean() - a.mean())
    out = {"a": summarize(a), "b": summarize(b), "difference": diff, "ci95": w["ci95"], "welch": w}
    if len(a) <= EXACT_MAX_N or len(b) <= EXACT_MAX_N:
        perm = permutation_p(a, b)
        out.update(p_value=perm["p_value"], test="exact permutation test (difference of means)",
                   permutations=perm["permutations"])
    else:
        out.update(p_value=w["p_value"], test="Welch's t-test")
    sd = _pooled_sd(a, b)
    need = seeds_needed(diff, sd)
    if need is not None and out["p_value"] >= ALPHA:
        # Not shown with the runs at hand, so "about N" must be more than they are; and an exact
        # permutation test cannot reach p < 0.05 below 4 runs a group (3 v 3: p >= 2/20).
        need = max(need, MIN_EXACT_N, max(len(a), len(b)) + 1)
    out["seeds_needed"] = need
    return _with_verdict(out, f"{len(a)} and {len(b)} seeds" if len(a) != len(b) else f"{len(a)} seeds")


def compare_to_value(a: Sequence[float], value: float) -> dict:
    """A group against one fixed figure (e.g. the course's single run): difference value − mean,
    its 95 % interval, one-sample t-test p-value, verdict and seeds needed."""
    a = _clean(a)
    if len(a) < 2:
        raise ValueError(f"the group needs at least 2 runs to compare with a figure (got {len(a)})")
    value = float(value)
    s = summarize(a)
    diff = value - s["mean"]
    if s["sd"] == 0:
        p = 1.0 if diff == 0 else 0.0
        ci = [diff, diff]
    else:
        res = _st.ttest_1samp(a, value)
        p = float(res.pvalue)
        lo, hi = s["ci95"]
        ci = [value - hi, value - lo]
    out = {"a": s, "b": {"value": value}, "difference": diff, "ci95": ci, "p_value": p,
           "test": "one-sample t-test against the figure",
           "seeds_needed": seeds_needed(diff, s["sd"], one_sample=True)}
    return _with_verdict(out, f"{len(a)} seeds", per="")


def _with_verdict(out: dict, n_text: str, per: str = " per group") -> dict:
    p = out["p_value"]
    out["verdict"] = "different" if p < ALPHA else "no evidence"
    gap = f"{100 * out['difference']:+.1f} points"
    if out["verdict"] == "different":
        text = f"different: {gap} (p = {fmt_p(p)}, {out['test']})"
    else:
        text = f"no evidence of a difference with {n_text} ({gap}, p = {fmt_p(p)}, {out['test']})"
        need = out["seeds_needed"]
        if need is None:
            text += ("; the gap is zero" if out["difference"] == 0
                     else f"; more than {MAX_SEEDS_NEEDED:,} seeds{per} would be needed to see a gap that small")
        else:
            text += f"; about {need} seeds{per} would be needed to see a gap of that size"
    out["verdict_text"] = text
    return out


def fmt_p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"
