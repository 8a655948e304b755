"""Seed statistics of a benchmark: mean, standard deviation and the paired t confidence interval.

Framework-free (no scipy: it is not a dependency). Student's t quantile is computed from the
regularised incomplete beta function (Lentz's continued fraction, as in Numerical Recipes §6.4)
and inverted by bisection; :data:`T975` holds the familiar table values the tests check it
against.
"""
import math

#: two-sided 95% critical values t_{0.975, df} (df = 1..10), for checking :func:`t_quantile`
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228}


def _betacf(a, b, x, iters=300, eps=1e-15):
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, iters + 1):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def betainc(a, b, x):
    """Regularised incomplete beta function I_x(a, b), 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) +
                 b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t, df):
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    x = df / (df + t * t)
    tail = 0.5 * betainc(df / 2.0, 0.5, x)
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p, df):
    """The ``p`` quantile of Student's t with ``df`` (>= 1) degrees of freedom."""
    if not 0.0 < p < 1.0:
        raise ValueError(f'p must be in (0, 1), got {p}')
    if df < 1:
        raise ValueError(f'df must be >= 1, got {df}')
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:  # bracket, then bisect (the CDF is monotone)
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def mean_std(values):
    """(mean, sample standard deviation with n - 1; None for fewer than 2 values)."""
    n = len(values)
    if n == 0:
        return None, None
    mean = sum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def paired_difference(values, baseline, confidence=0.95):
    """Paired difference ``values - baseline`` over the seeds both have, with its t interval.

    The arms of a seed share initial weights, data order and mixing draws, so the per-seed
    difference removes that shared noise; the interval is mean(d) ± t_{(1+c)/2, n-1}·sd(d)/√n.

    Args:
        values, baseline (dict[int, float]): metric per seed of the arm and of its baseline.
        confidence (float): two-sided level of the interval.

    Returns:
        dict: ``seeds`` (paired), ``diffs``, ``n``, ``mean``, ``std``, ``t`` (critical value),
        ``ci`` ([low, high], None below 2 pairs) and ``excludes_zero`` (None below 2 pairs).
    """
    seeds = sorted(set(values) & set(baseline))
    diffs = [values[s] - baseline[s] for s in seeds]
    mean, std = mean_std(diffs)
    out = dict(seeds=seeds, diffs=diffs, n=len(diffs), mean=mean, std=std, t=None, ci=None,
               excludes_zero=None, confidence=confidence)
    if len(diffs) >= 2:
        t = t_quantile(0.5 + confidence / 2.0, len(diffs) - 1)
        half = t * std / math.sqrt(len(diffs))
        out.update(t=t, ci=[mean - half, mean + half],
                   excludes_zero=bool(mean - half > 0 or mean + half < 0))
    return out
