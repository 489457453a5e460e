"""Statistics for comparing models on the same scans: intervals that respect patients, exact paired tests.

Two models evaluated on the same scans give *paired* outcomes; a difference between them is claimed only when an
exact McNemar test on the discordant scans supports it (:func:`mcnemar`). Patients contribute several scans, so
intervals come both as Wilson (scans independent, :func:`octlib.metrics.wilson_interval`) and as a percentile
bootstrap that resamples whole patients (:func:`cluster_bootstrap`).
"""

from __future__ import annotations

import numpy as np


def _bool(a, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 1:
        raise ValueError(f"`{name}` must be a 1-D array of per-scan outcomes, got shape {a.shape}.")
    return a.astype(bool)


def mcnemar(a, b) -> dict:
    """Exact McNemar test of two paired per-scan outcomes (True = correct / robust) on the same scans.

    Returns ``{"n", "a_only", "b_only", "difference" (mean a - mean b), "p_value"}``: ``a_only`` scans are right
    for ``a`` only, ``b_only`` for ``b`` only; the p-value is the two-sided exact binomial test on those
    discordant scans (statsmodels, ``exact=True``); 1.0 when there are none.
    """
    from statsmodels.stats.contingency_tables import mcnemar as _mcnemar

    a, b = _bool(a, "a"), _bool(b, "b")
    if len(a) != len(b):
        raise ValueError(f"Paired outcomes need the same scans: {len(a)} vs {len(b)} outcomes.")
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    table = [[int((a & b).sum()), a_only], [b_only, int((~a & ~b).sum())]]
    p = 1.0 if a_only + b_only == 0 else float(_mcnemar(table, exact=True).pvalue)
    return {"n": int(len(a)), "a_only": a_only, "b_only": b_only,
            "difference": float(a.mean() - b.mean()) if len(a) else float("nan"), "p_value": p}


def cluster_bootstrap(values, clusters, *, n_boot: int = 2000, confidence: float = 0.95, seed: int = 0,
                      paired_with=None) -> dict:
    """Percentile bootstrap interval of a mean over scans, resampling whole clusters (patients).

    Args:
        values: per-scan numbers (e.g. 1 = robust, 0 = fooled).
        clusters: per-scan cluster IDs (patient or split group); scans of one patient are drawn together.
        paired_with: optional second per-scan array on the same scans: the interval is then for the mean
            difference ``values - paired_with`` (a paired, patient-clustered bootstrap).
    Returns ``{"value", "ci_low", "ci_high", "n", "n_clusters", "n_boot"}``.
    """
    v = np.asarray(values, dtype=np.float64)
    c = np.asarray(clusters)
    if v.ndim != 1 or c.shape != v.shape:
        raise ValueError(f"`values` and `clusters` must be 1-D and of one length, got {v.shape} and {c.shape}.")
    if paired_with is not None:
        w = np.asarray(paired_with, dtype=np.float64)
        if w.shape != v.shape:
            raise ValueError(f"`paired_with` has shape {w.shape}, `values` {v.shape}: pair the same scans.")
        v = v - w
    if not len(v):
        return {"value": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 0, "n_clusters": 0,
                "n_boot": n_boot}
    ids, inverse = np.unique(c, return_inverse=True)
    sums = np.bincount(inverse, weights=v)
    counts = np.bincount(inverse).astype(np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(ids), size=(n_boot, len(ids)))
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return {"value": float(v.mean()), "ci_low": float(lo), "ci_high": float(hi), "n": int(len(v)),
            "n_clusters": int(len(ids)), "n_boot": int(n_boot)}


def proportion(successes, clusters=None, *, seed: int = 0) -> dict:
    """A per-scan proportion with both intervals: Wilson (``ci_low``/``ci_high``) and, when ``clusters`` are
    given, the patient-clustered bootstrap (``boot_low``/``boot_high``)."""
    from .metrics import wilson_interval

    s = _bool(successes, "successes")
    lo, hi = wilson_interval(int(s.sum()), len(s))
    out = {"value": float(s.mean()) if len(s) else float("nan"), "ci_low": lo, "ci_high": hi, "n": int(len(s))}
    if clusters is not None:
        boot = cluster_bootstrap(s, clusters, seed=seed)
        out.update(boot_low=boot["ci_low"], boot_high=boot["ci_high"], n_clusters=boot["n_clusters"])
    return out


def spread(values) -> dict:
    """Mean, sample standard deviation (n - 1; ``nan`` for one value), minimum, maximum and n of per-seed values:
    how much a number moves when only the training seed changes."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if not len(v) or not np.all(np.isfinite(v)):
        raise ValueError(f"`values` must be finite numbers, one per seed; got {list(v)}.")
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else float("nan"),
            "min": float(v.min()), "max": float(v.max()), "n": int(len(v))}
