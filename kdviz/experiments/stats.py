"""The statistics of a study, apart from any page: per-arm intervals and paired comparisons.

Arms of one seed are paired (same initial weights, batches, crops: :mod:`kdviz.training.batches`),
so an arm is compared with the baseline and with KD seed by seed: the mean of the per-seed
differences, its 95 % t-interval, a paired t-test, and Cohen's d_z (the mean difference over the
differences' standard deviation). The p-values of a study's whole family of comparisons are
Holm-corrected (step-down, controls the family-wise error rate), so "significant" means it after
looking at every arm. scipy does the distributions.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

NAN = float("nan")


@dataclass
class Summary:
    """Mean, sample standard deviation and a t-interval of the mean (NaN where undefined)."""

    n: int
    mean: float
    sd: float
    ci_low: float
    ci_high: float

    def as_dict(self) -> dict:
        return asdict(self)


def describe(values: Sequence[float], confidence: float = 0.95) -> Summary:
    """``values``' mean ± sd and the ``confidence`` t-interval of the mean (one value: no interval)."""
    from scipy import stats

    arr = np.asarray(values, dtype=float)
    n = len(arr)
    if n == 0:
        return Summary(0, NAN, NAN, NAN, NAN)
    mean = float(arr.mean())
    if n < 2:
        return Summary(1, mean, NAN, NAN, NAN)
    sd = float(arr.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return Summary(n, mean, sd, mean - half, mean + half)


@dataclass
class Comparison:
    """One arm against a reference arm over the seeds both finished."""

    arm: str
    reference: str
    seeds: list[int]
    diff: float  # mean of (arm − reference) over the paired seeds
    ci_low: float
    ci_high: float
    t: float
    p: float  # two-sided paired t-test
    p_holm: float  # Holm-corrected over the study's family of comparisons
    effect_dz: float  # Cohen's d_z: mean difference / sd of the differences

    def as_dict(self) -> dict:
        return asdict(self)


def paired(
    arm: Mapping[int, float], reference: Mapping[int, float], confidence: float = 0.95
) -> tuple[list[int], Summary, float, float, float]:
    """Paired differences over the seeds in both: (seeds, their :func:`describe`, t, p, d_z)."""
    from scipy import stats

    seeds = sorted(set(arm) & set(reference))
    diffs = [arm[s] - reference[s] for s in seeds]
    summary = describe(diffs, confidence)
    if len(diffs) < 2 or not summary.sd > 0:
        # one seed, or every seed moved by exactly the same amount: no spread, no test
        return seeds, summary, NAN, NAN, NAN
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.ttest_rel([arm[s] for s in seeds], [reference[s] for s in seeds])
    return seeds, summary, float(result.statistic), float(result.pvalue), summary.mean / summary.sd


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment: the i-th smallest of m p-values times (m − i), kept monotone and ≤ 1.

    NaN p-values (comparisons that could not be tested) are left out of the family and stay NaN.
    """
    known = [(p, i) for i, p in enumerate(pvalues) if p == p]
    out = [NAN] * len(pvalues)
    m, running = len(known), 0.0
    for rank, (p, i) in enumerate(sorted(known)):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def comparisons(
    accuracy: Mapping[str, Mapping[int, float]],
    references: Sequence[str] = ("baseline", "kd"),
    confidence: float = 0.95,
) -> list[Comparison]:
    """Every arm against each reference arm present (not against itself, and KD's against the
    baseline once), with Holm's correction over all of them.

    ``accuracy[arm][seed]`` is a run's test accuracy.
    """
    rows: list[tuple[str, str, list[int], Summary, float, float, float]] = []
    for ref in references:
        if ref not in accuracy:
            continue
        for arm, values in accuracy.items():
            if arm == ref or arm in references[: references.index(ref)]:
                continue
            seeds, summary, t, p, dz = paired(values, accuracy[ref], confidence)
            if seeds:
                rows.append((arm, ref, seeds, summary, t, p, dz))
    adjusted = holm([r[5] for r in rows])
    return [
        Comparison(arm, ref, seeds, s.mean, s.ci_low, s.ci_high, t, p, p_adj, dz)
        for (arm, ref, seeds, s, t, p, dz), p_adj in zip(rows, adjusted, strict=True)
    ]
