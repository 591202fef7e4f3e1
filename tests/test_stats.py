"""The statistics of repeats against known cases and against scipy's own tests."""
import itertools
import math

import numpy as np
import pytest
from scipy import stats as sps

from xray_core import stats
A8 = [0.662, 0.671, 0.668, 0.659, 0.675, 0.664, 0.670, 0.666]


def test_summary_matches_numpy_and_student_t():
    s = stats.summarize([0.60, 0.62, 0.65, 0.61])
    assert s["n"] == 4 and s["values"] == [0.60, 0.62, 0.65, 0.61]
    assert s["mean"] == pytest.approx(0.62)
    assert s["sd"] == pytest.approx(np.std([0.60, 0.62, 0.65, 0.61], ddof=1))
    lo, hi = sps.t.interval(0.95, 3, loc=0.62, scale=s["sd"] / 2)
    assert s["ci95"] == pytest.approx([lo, hi])
    # the t interval is wider than a normal one with so few values
    assert s["ci95"][1] - s["mean"] > 1.96 * s["sd"] / 2


def test_summary_of_one_run_has_no_spread_and_of_none_no_mean():
    assert stats.summarize([0.7]) == {"values": [0.7], "n": 1, "mean": 0.7, "sd": None, "sem": None, "ci95": None}
    assert stats.summarize([])["mean"] is None
    with pytest.raises(ValueError):
        stats.summarize([0.5, float("nan")])


def test_identical_groups_give_p_one_and_no_evidence():
    for n in (3, 8):  # the permutation regime and the Welch regime
        a = A8[:n]
        c = stats.compare(a, list(a))
        assert c["difference"] == pytest.approx(0.0, abs=1e-12)
        assert c["p_value"] == pytest.approx(1.0)
        assert c["verdict"] == "no evidence"
        assert c["verdict_text"].startswith(f"no evidence of a difference with {n} seeds")
        assert c["ci95"][0] < 0 < c["ci95"][1]


def test_clearly_separated_groups_are_different():
    b = [v + 0.05 for v in A8]
    c = stats.compare(A8, b)
    assert c["test"] == "Welch's t-test"
    assert c["p_value"] < 1e-8 and c["verdict"] == "different"
    assert c["difference"] == pytest.approx(0.05)
    assert c["ci95"][0] > 0.04 and c["ci95"][1] < 0.06
    assert c["verdict_text"].startswith("different: +5.0 points")
    # reversed order: the sign of B − A flips, the verdict does not
    r = stats.compare(b, A8)
    assert r["difference"] == pytest.approx(-0.05) and r["verdict"] == "different"


def test_welch_equals_scipy_ttest_ind_unequal_variances():
    rng = np.random.default_rng(4)
    a, b = rng.normal(0.67, 0.004, 7), rng.normal(0.675, 0.02, 9)  # very different spreads
    c = stats.compare(a, b)
    ref = sps.ttest_ind(b, a, equal_var=False)
    assert c["test"] == "Welch's t-test"
    assert c["p_value"] == pytest.approx(ref.pvalue, rel=1e-12)
    assert c["welch"]["t"] == pytest.approx(ref.statistic, rel=1e-12)
    assert c["welch"]["df"] == pytest.approx(ref.df, rel=1e-9)
    lo, hi = ref.confidence_interval(0.95)
    assert c["ci95"] == pytest.approx([lo, hi], rel=1e-9)
    # and not the pooled (equal-variance) test, which gives another p here
    assert c["p_value"] != pytest.approx(sps.ttest_ind(b, a).pvalue, rel=1e-3)


def test_small_groups_use_an_exact_permutation_test_that_enumerates_every_relabelling():
    a, b = [0.66, 0.67, 0.69, 0.665], [0.68, 0.70, 0.675, 0.71]
    c = stats.compare(a, b)
    assert c["test"].startswith("exact permutation") and c["permutations"] == math.comb(8, 4)
    # by hand: share of the 70 splits whose |mean difference| is at least the observed one
    pooled = np.array(a + b)
    obs = abs(np.mean(b) - np.mean(a))
    hits = 0
    for idx in itertools.combinations(range(8), 4):
        mask = np.zeros(8, bool)
        mask[list(idx)] = True
        hits += abs(pooled[mask].mean() - pooled[~mask].mean()) >= obs - 1e-12
    assert c["p_value"] == pytest.approx(hits / 70)
    # Welch's figures are still reported beside it
    assert c["welch"]["p_value"] == pytest.approx(sps.ttest_ind(b, a, equal_var=False).pvalue)


def test_five_seeds_fully_separated_reach_the_smallest_exact_p_and_three_never_can():
    a = [0.60, 0.61, 0.62, 0.63, 0.64]
    c = stats.compare(a, [v + 0.2 for v in a])
    assert c["p_value"] == pytest.approx(2 / 252) and c["verdict"] == "different"
    c3 = stats.compare(a[:3], [0.9, 0.91, 0.92])
    assert c3["p_value"] == pytest.approx(0.1) and c3["verdict"] == "no evidence"


def test_one_sample_against_a_course_figure_equals_ttest_1samp():
    c = stats.compare_to_value(A8, 0.691)
    ref = sps.ttest_1samp(A8, 0.691)
    assert c["p_value"] == pytest.approx(ref.pvalue, rel=1e-12)
    assert c["difference"] == pytest.approx(0.691 - np.mean(A8))
    lo, hi = ref.confidence_interval(0.95)  # of the mean; the gap is figure − mean
    assert c["ci95"] == pytest.approx([0.691 - hi, 0.691 - lo])
    assert c["verdict"] == "different" and c["test"].startswith("one-sample t")
    near = stats.compare_to_value(A8, float(np.mean(A8)) + 0.001)
    assert near["verdict"] == "no evidence" and "8 seeds" in near["verdict_text"]


def test_seeds_needed_reaches_power_080_and_one_fewer_does_not():
    n = stats.seeds_needed(0.01, 0.01)   # effect size d = 1
    assert n == 17                       # the textbook figure for d = 1, α 0.05, power 0.8 (two-sample t)

    def power(k):
        df, nc = 2 * k - 2, math.sqrt(k / 2)
        tc = sps.t.ppf(0.975, df)
        return sps.nct.sf(tc, df, nc) + sps.nct.cdf(-tc, df, nc)
    assert power(n) >= 0.8 > power(n - 1)
    # smaller gaps need more seeds; no gap can never be seen; no spread needs the minimum
    assert stats.seeds_needed(0.005, 0.01) > n
    assert stats.seeds_needed(0.0, 0.01) is None and stats.seeds_needed(0.01, 0.0) == 2
    assert stats.seeds_needed(1e-9, 1.0) is None     # beyond the search limit
    assert stats.seeds_needed(0.01, 0.01, one_sample=True) == 10  # one-sample t, d = 1


def test_no_evidence_says_how_many_seeds_would_be_needed():
    a = [0.66, 0.68, 0.67, 0.69, 0.65]
    b = [0.665, 0.685, 0.675, 0.695, 0.655]
    c = stats.compare(a, b)
    assert c["verdict"] == "no evidence"
    assert c["seeds_needed"] == stats.seeds_needed(0.005, float(np.std(a, ddof=1)))
    assert f"about {c['seeds_needed']} seeds per group" in c["verdict_text"]


def test_runs_needed_is_never_the_runs_already_there():
    """A large gap with 2 or 3 runs a group: the power formula says 2-3 would do, but the exact
    test cannot show it with them (2 v 2: p >= 1/3), so more are needed, at least 4 a group."""
    for a, b in (([0.60, 0.61], [0.70, 0.71]), ([0.60, 0.61, 0.605], [0.70, 0.71, 0.705])):
        c = stats.compare(a, b)
        assert c["verdict"] == "no evidence" and c["p_value"] >= 0.05
        assert stats.seeds_needed(c["difference"], 0.007) <= len(a)      # what the formula alone says
        assert c["seeds_needed"] >= max(stats.MIN_EXACT_N, len(a) + 1)
        assert f"about {c['seeds_needed']} seeds per group" in c["verdict_text"]
    # with 4 a group the exact test can decide: different, nothing more needed
    d = stats.compare([0.60, 0.61, 0.605, 0.602], [0.70, 0.71, 0.705, 0.702])
    assert d["verdict"] == "different" and d["p_value"] < 0.05


def test_groups_too_small_to_compare_are_refused():
    with pytest.raises(ValueError, match="at least 2"):
        stats.compare([0.6], [0.7, 0.71])
    with pytest.raises(ValueError, match="at least 2"):
        stats.compare_to_value([0.6], 0.7)
