"""Farrington (flexible) outbreak detection following R ``surveillance::farringtonFlexible``.

Reference: ``surveillance/R/farringtonFlexible.R`` and ``R/algo_farrington.R``
(anscombe.residuals, algo.farrington.assign.weights); Farrington et al. (1996) and
Noufaily et al. (2013). Weekly series with dates (``epochAsDate=TRUE``, freq 52).

For each monitored week: reference weeks are the same date 1..b years back (moved to the
nearest same weekday); the GLM data are the windows of +-w weeks around them (the current
year's window t-w..t is dropped by ``pastWeeksNotIncluded``, default w). A quasi-Poisson
log-link GLM ``response ~ 1 + wtime`` is fitted by IRLS (mirroring R's ``glm.fit``), the
dispersion is ``phi = max(dispersion, 1)``, past outbreaks are down-weighted with Anscombe
residuals above ``weightsThreshold`` and the model refitted. The trend is kept only if its
t-test p-value < ``pThresholdTrend``, b >= 3 and the prediction does not exceed the largest
baseline count. The upper bound is the "delta" threshold on the 2/3-power scale:
``(mu0^(2/3) + z_{1-alpha} * sqrt(4/9 * mu0^(1/3) * (phi + se^2/mu0)))^(3/2)``.
No upper bound (NA) when fewer than ``limit54[0]`` cases fell in the last ``limit54[1]``
weeks (current included); alarm when the count exceeds the bound and is not 0.

Defaults as farringtonFlexible: b=5, w=3, reweight=True, weightsThreshold=2.58,
alpha=0.05, trend=True, pThresholdTrend=0.05, limit54=(5, 4), powertrans "2/3",
noPeriods=1, pastWeeksNotIncluded=None (= w), thresholdMethod="delta". Only noPeriods=1,
thresholdMethod "delta" and no population offset are implemented.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm
from scipy.stats import t as student_t

from .base import DetectorPoint, check_start

_EPSILON = 1e-8  # glm.control() defaults
_MAXIT = 25


@dataclass
class _GlmFit:
    coef: np.ndarray
    mu: np.ndarray
    converged: bool
    dispersion: float  # summary.glm()$dispersion
    df_residual: int
    cov_unscaled: np.ndarray
    hat: np.ndarray
    working_resid: np.ndarray  # (y - mu) / mu, glm's `residuals`


def _poisson_deviance(y: np.ndarray, mu: np.ndarray, w: np.ndarray) -> float:
    with np.errstate(divide="ignore", invalid="ignore"):
        ylogy = np.where(y > 0, y * np.log(y / mu), 0.0)
    return float(np.sum(2 * w * (ylogy - (y - mu))))


def glm_quasipoisson(x: np.ndarray, y: np.ndarray, prior: np.ndarray) -> _GlmFit:
    """Quasi-Poisson log-link GLM by IRLS, following R's ``glm.fit`` and ``summary.glm``."""
    eta = np.log(y + 0.1)  # poisson()$initialize: mustart <- y + 0.1
    mu = np.exp(eta)
    dev_old = _poisson_deviance(y, mu, prior)
    coef_old: np.ndarray | None = None
    coef = np.zeros(x.shape[1])
    converged = False
    work_w = prior * mu
    for _ in range(_MAXIT):
        good = prior > 0
        z = eta + (y - mu) / mu
        work_w = np.where(good, prior * mu, 0.0)
        sw = np.sqrt(work_w)
        coef = np.linalg.lstsq(x * sw[:, None], z * sw, rcond=None)[0]
        eta = x @ coef
        with np.errstate(over="ignore"):
            mu = np.exp(eta)
        dev = _poisson_deviance(y, mu, prior)
        halvings = 0
        while not (math.isfinite(dev) and np.all(np.isfinite(mu)) and np.all(mu > 0)):
            if coef_old is None or halvings >= _MAXIT:
                raise ArithmeticError("no valid set of coefficients has been found")
            coef = (coef + coef_old) / 2
            eta = x @ coef
            mu = np.exp(eta)
            dev = _poisson_deviance(y, mu, prior)
            halvings += 1
        if abs(dev - dev_old) / (abs(dev) + 0.1) < _EPSILON:
            converged = True
            break
        dev_old = dev
        coef_old = coef
    # As glm.fit, the returned working weights (and QR) come from the last iteration's start.
    xtwx = x.T @ (x * work_w[:, None])
    cov_unscaled = np.linalg.inv(xtwx)
    df_residual = int(np.sum(prior != 0)) - x.shape[1]
    resid = (y - mu) / mu
    positive = work_w > 0
    dispersion = (
        float(np.sum((work_w * resid**2)[positive]) / df_residual) if df_residual > 0 else math.nan
    )
    hat = work_w * np.einsum("ij,jk,ik->i", x, cov_unscaled, x)
    return _GlmFit(coef, mu, converged, dispersion, df_residual, cov_unscaled, hat, resid)


def assign_weights(s: np.ndarray, weights_threshold: float) -> np.ndarray:
    """``algo.farrington.assign.weights``: gamma * s^-2 above the threshold, gamma below."""
    above = s > weights_threshold
    with np.errstate(divide="ignore"):
        inv_sq = s ** (-2.0)
    gamma = len(s) / float(np.sum(np.where(above, inv_sq, 1.0)))
    return np.where(above, gamma * inv_sq, gamma)


def _fit_flexible(
    wtime: np.ndarray, y: np.ndarray, trend: bool, reweight: bool, weights_threshold: float
) -> tuple[_GlmFit, float, bool] | None:
    """``algo.farrington.fitGLM.flexible``: returns (fit, phi, has_trend) or None."""
    ones = np.ones(len(y))

    def design(with_trend: bool) -> np.ndarray:
        return np.column_stack([ones, wtime]) if with_trend else ones[:, None]

    with_trend = trend
    fit = glm_quasipoisson(design(with_trend), y, ones)
    if not fit.converged:
        if with_trend:
            with_trend = False
            fit = glm_quasipoisson(design(False), y, ones)
        if not fit.converged:
            return None
    phi = max(fit.dispersion, 1.0)
    if reweight:
        with np.errstate(divide="ignore", invalid="ignore"):
            s = 1.5 * (y ** (2 / 3) * fit.mu ** (-1 / 6) - fit.mu**0.5)
            s = s / np.sqrt(phi * (1 - fit.hat))
        omega = assign_weights(s, weights_threshold)
        fit = glm_quasipoisson(design(with_trend), y, omega)
        phi = max(fit.dispersion, 1.0)
        # R quirk (docs/detectors.md): fitGLM.flexible overwrites model$weights with omega,
        # the prior weights, so summary.glm and predict.glm, which read model$weights as the
        # working weights, compute the dispersion as sum(omega * r^2) / df. That value (not
        # phi) scales the prediction's standard error and the trend's t-test in R.
        reported = _summary_dispersion(fit, omega)
        fit = dataclasses.replace(fit, dispersion=reported)
    return fit, phi, with_trend


def _summary_dispersion(fit: _GlmFit, weights: np.ndarray) -> float:
    """summary.glm's dispersion, sum((w * r^2)[w > 0]) / df, with r the working residuals
    and w whatever the model's `weights` hold."""
    if fit.df_residual <= 0:
        return math.nan
    positive = weights > 0
    return float(np.sum((weights * fit.working_resid**2)[positive]) / fit.df_residual)


def _predict(fit: _GlmFit, x0: np.ndarray) -> tuple[float, float]:
    """predict.glm(type="response", se.fit=TRUE) with the summary dispersion: R passes
    `dispersion=model$phi` inside `newdata`, where predict.glm never looks, so its default,
    summary.glm's dispersion, is what scales the standard error."""
    eta0 = float(x0 @ fit.coef)
    mu0 = math.exp(eta0)
    se_eta = math.sqrt(float(x0 @ fit.cov_unscaled @ x0) * fit.dispersion)
    return mu0, se_eta * mu0


def _minus_years(day: dt.date, years: int) -> dt.date:
    """R's ``seq(day, by="-1 year")``: Feb 29 in a non-leap year rolls to Mar 1."""
    try:
        return day.replace(year=day.year - years)
    except ValueError:
        return dt.date(day.year - years, 3, 1)


def reference_dates(day: dt.date, b: int) -> list[dt.date]:
    """``algo.farrington.referencetimepoints`` for weekly data: day and 1..b years back,
    each moved to the closest date with the same weekday."""
    out = []
    for i in range(b + 1):
        ref = _minus_years(day, i)
        a = ref - dt.timedelta(days=(ref.isoweekday() % 7) - (day.isoweekday() % 7))
        other = a + dt.timedelta(days=-7 if a > ref else 7)
        out.append(other if abs((a - ref).days) > abs((other - ref).days) else a)
    return out


def _glm_data(
    k: int, dates: Sequence[dt.date], y: np.ndarray, b: int, w: int, past_weeks: int
) -> tuple[np.ndarray, np.ndarray, float] | None:
    """``algo.farrington.data.glm`` (noPeriods=1): (wtime, response, wtime of week k)."""
    position = {d: i for i, d in enumerate(dates)}
    refs = reference_dates(dates[k], b)
    if not all(r in position for r in refs):
        return None  # R stops: "Some reference time points did not exist"
    in_block = np.zeros(len(dates), dtype=bool)
    in_block[max(0, k - w) : k + 1] = True
    for ref_week in sorted((position[r] for r in refs), reverse=True)[1 : b + 1]:
        if ref_week - w < -1:  # R would fail mixing negative and positive subscripts
            return None
        in_block[max(0, ref_week - w) : ref_week + w + 1] = True
    in_block[max(0, k - past_weeks) : k + 1] = False
    idx = np.flatnonzero(in_block & ~np.isnan(y))
    if len(idx) == 0:
        return None
    step = (dates[1] - dates[0]).days
    first = dates[int(idx[0])]
    wtime = np.array([(dates[int(i)] - first).days / step for i in idx], dtype=np.float64)
    return wtime, y[idx], (dates[k] - first).days / step


def _upper_delta(mu0: float, se_fit: float, phi: float, alpha: float) -> float:
    """``algo.farrington.threshold.farrington`` upper limit, powertrans "2/3"."""
    tau = phi + se_fit**2 / mu0
    se = math.sqrt(4 / 9 * mu0 ** (1 / 3) * tau)
    return float((mu0 ** (2 / 3) + float(norm.ppf(1 - alpha)) * se) ** 1.5)


def farrington_flexible(
    counts: Sequence[float], *, dates: Sequence[dt.date], start: int, b: int = 5, w: int = 3,
    reweight: bool = True, weights_threshold: float = 2.58, alpha: float = 0.05,
    trend: bool = True, p_threshold_trend: float = 0.05, limit54: tuple[int, int] = (5, 4),
    past_weeks_not_included: int | None = None,
) -> list[DetectorPoint]:
    """``surveillance::farringtonFlexible`` (noPeriods=1, thresholdMethod "delta")."""
    check_start(counts, start)
    if len(dates) != len(counts):
        raise ValueError("dates and counts differ in length")
    if not (limit54[0] >= 0 and limit54[1] > 0):
        raise ValueError("The limit54 arguments are out of bounds: cases >= 0 and period > 0.")
    past_weeks = w if past_weeks_not_included is None else past_weeks_not_included
    y = np.asarray(counts, dtype=float)
    points: list[DetectorPoint] = []
    for k in range(start, len(y)):
        x = float(y[k])
        none = DetectorPoint(k, x, None, False)
        data = _glm_data(k, dates, y, b, w, past_weeks) if len(y) > 1 else None
        if data is None:
            points.append(none)
            continue
        wtime, response, wtime_now = data
        fitted = _fit_flexible(wtime, response, trend, reweight, weights_threshold)
        if fitted is None:
            points.append(none)
            continue
        fit, phi, has_trend = fitted
        if has_trend:
            mu0, _ = _predict(fit, np.array([1.0, wtime_now]))
            se = math.sqrt(fit.dispersion * fit.cov_unscaled[1, 1])
            p_trend = 2 * float(student_t.cdf(-abs(fit.coef[1] / se), fit.df_residual))
            keep = b >= 3 and p_trend < p_threshold_trend and mu0 <= float(np.max(response))
            if not keep:
                fitted = _fit_flexible(wtime, response, False, reweight, weights_threshold)
                if fitted is None:
                    points.append(none)
                    continue
                fit, phi, has_trend = fitted
        x0 = np.array([1.0, wtime_now]) if has_trend else np.array([1.0])
        mu0, se_fit = _predict(fit, x0)
        upper = _upper_delta(mu0, se_fit, phi, alpha)
        window = y[max(0, k - limit54[1] + 1) : k + 1]
        if not float(np.sum(window)) >= limit54[0] or not math.isfinite(upper):
            points.append(none)
            continue
        score = (x - mu0) / (upper - mu0)
        points.append(DetectorPoint(k, x, upper, bool(score > 1 and x != 0)))
    return points


def default_start(dates: Sequence[dt.date], b: int = 5, w: int = 3) -> int:
    """farringtonFlexible's default range start (freq*b + w + 1, 1-based), moved on to the
    first week whose reference weeks all exist in the series."""
    position = set(dates)
    for k in range(52 * b + w, len(dates)):
        if all(r in position for r in reference_dates(dates[k], b)):
            return k
    return len(dates)
