"""Spike detectors checked by hand, against surveillance's published test values, and on
the German Salmonella Newport series (2011 sprout outbreak, ISO weeks 44-47)."""

from __future__ import annotations

import csv
import datetime as dt
import math
import statistics
from collections.abc import Callable
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest
from scipy.optimize import minimize

from services.detection.detectors import (
    METHODS,
    DetectorPoint,
    cusum,
    ears_c1,
    ears_c2,
    ears_c3,
    ewma,
    farrington_flexible,
    poisson,
    threshold,
)
from services.detection.detectors.ewma import ewma_pvalues
from services.detection.detectors.farrington import (
    _upper_delta,
    assign_weights,
    default_start,
    glm_quasipoisson,
    reference_dates,
)

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
SALMONELLA = DATA / "salmonella-newport-germany-weekly.csv"
OUTBREAK_WEEKS = {44, 45, 46, 47}  # 2011: 9, 41, 45, 17 cases


def z(p: float) -> float:
    return NormalDist().inv_cdf(p)


@pytest.fixture(scope="module")
def salmonella() -> list[dict[str, str]]:
    with SALMONELLA.open(newline="") as fh:
        return list(csv.DictReader(fh))


def counts_of(rows: list[dict[str, str]]) -> list[float]:
    return [float(r["count"]) for r in rows]


def first_index(rows: list[dict[str, str]], year: int) -> int:
    return next(i for i, r in enumerate(rows) if int(r["iso_year"]) == year)


def alarm_weeks(rows: list[dict[str, str]], points: list[DetectorPoint], year: int) -> set[int]:
    return {
        int(rows[p.index]["iso_week"])
        for p in points
        if p.alarm and int(rows[p.index]["iso_year"]) == year
    }


def test_registry_has_every_method() -> None:
    assert set(METHODS) == {
        "ears-c1", "ears-c2", "ears-c3", "cusum", "farrington-flexible", "ewma",
        "threshold", "poisson",
    }


# ---------------------------------------------------------------- EARS


SERIES = [3, 5, 4, 6, 2, 4, 5, 3, 7, 4, 5, 6, 3, 12, 4, 9, 15]


def test_c1_upper_bound_is_mean_plus_z_sd_of_previous_seven() -> None:
    points = ears_c1(SERIES, start=7)
    assert [p.index for p in points] == list(range(7, len(SERIES)))
    for p in points:
        ref = SERIES[p.index - 7 : p.index]
        expected = statistics.mean(ref) + z(0.999) * statistics.stdev(ref)
        assert p.upperbound == pytest.approx(expected, rel=1e-12)
        assert p.alarm == (SERIES[p.index] > expected)
    # by hand: baseline 3,5,4,6,2,4,5 -> mean 29/7, sd sqrt(10.857/6)
    first = points[0]
    assert first.upperbound == pytest.approx(29 / 7 + 3.090232 * math.sqrt((76 / 7) / 6), 1e-6)


def test_c2_skips_a_guard_band_of_two() -> None:
    points = ears_c2(SERIES, start=9, alpha=0.05, min_sigma=0.5)
    for p in points:
        ref = SERIES[p.index - 9 : p.index - 2]
        expected = statistics.mean(ref) + z(0.95) * max(statistics.stdev(ref), 0.5)
        assert p.upperbound == pytest.approx(expected, rel=1e-12)


def test_c3_follows_earsc_formula() -> None:
    zc3 = z(1 - 0.025)  # earsC's C3 default alpha

    def c2(t: int) -> float:
        ref = SERIES[t - 9 : t - 2]
        return (SERIES[t] - statistics.mean(ref)) / statistics.stdev(ref)

    points = ears_c3(SERIES, start=11)
    for p in points:
        t = p.index
        sd = statistics.stdev(SERIES[t - 9 : t - 2])
        lags = max(0.0, c2(t - 2) - 1) + max(0.0, c2(t - 1) - 1)
        expected = max(0.0, SERIES[t] + sd * (zc3 - lags))
        assert p.upperbound == pytest.approx(expected, rel=1e-12, abs=1e-12)
        assert p.alarm == (SERIES[t] > expected)


def test_ears_without_history_has_no_upper_bound() -> None:
    assert ears_c1(SERIES, start=0)[6] == DetectorPoint(6, 5.0, None, False)
    assert ears_c2(SERIES, start=0)[8].upperbound is None
    assert ears_c2(SERIES, start=0)[9].upperbound is not None
    assert ears_c3(SERIES, start=0)[10].upperbound is None
    assert ears_c3(SERIES, start=0)[11].upperbound is not None


def test_c3_zero_sd_gives_no_bound_like_r_na() -> None:
    flat = [2.0] * 14
    assert all(p.upperbound is None and not p.alarm for p in ears_c3(flat, start=11))
    assert [p.upperbound for p in ears_c1(flat, start=7)] == [2.0] * 7  # sd 0: bound = mean


def test_ears_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="Minimum baseline"):
        ears_c1(SERIES, start=7, baseline=2)
    with pytest.raises(ValueError, match="minimum sigma"):
        ears_c2(SERIES, start=9, min_sigma=-1)


def test_c1_matches_surveillance_test_values(salmonella: list[dict[str, str]]) -> None:
    # surveillance tests/testthat/test-earsC.R: earsC(salmNewportGermany, range=in2011,
    # method="C1", alpha=0.05) upperbound[1:4]
    points = ears_c1(counts_of(salmonella), start=first_index(salmonella, 2011), alpha=0.05)
    assert [p.upperbound for p in points[:4]] == pytest.approx(
        [3.278854, 3.278854, 3.436517, 3.855617], abs=1e-6
    )


@pytest.mark.parametrize("detector", [ears_c1, ears_c2, ears_c3])
def test_ears_flags_the_2011_outbreak(
    detector: Callable[..., list[DetectorPoint]], salmonella: list[dict[str, str]]
) -> None:
    points = detector(counts_of(salmonella), start=first_index(salmonella, 2011))
    assert alarm_weeks(salmonella, points, 2011) & OUTBREAK_WEEKS


# ---------------------------------------------------------------- CUSUM


def test_cusum_by_hand() -> None:
    # history mean m = 2; standardised x: (x - 2) / sqrt(2)
    counts = [1, 3, 2, 2, 2, 6, 7, 1]
    points = cusum(counts, start=4)
    r2 = math.sqrt(2)
    c = 0.0
    expected = []
    for x in counts[4:]:
        ub = math.ceil(r2 * (2.26 + 1.04 - c) + 2)
        c = max(0.0, c + (x - 2) / r2 - 1.04)
        expected.append((ub, c >= 2.26))
    assert [(p.upperbound, p.alarm) for p in points] == expected
    # spelled out: x=2 -> C=0, ub=ceil(6.667)=7; x=6 -> C=1.7884 (no alarm, ub 7);
    # x=7 -> C=1.7884+3.5355-1.04=4.2840 >= 2.26 alarm, ub=ceil(1.4142*(3.3-1.7884)+2)=5
    assert expected[:3] == [(7, False), (7, False), (5, True)]
    assert points[3].alarm  # the CUSUM is not reset after an alarm (as algo.cusum)


def test_cusum_upper_bound_is_the_alarm_boundary() -> None:
    counts = [4.0] * 10 + [5.0, 3.0, 9.0, 2.0]
    for trans in ("standard", "rossi", "anscombe"):
        for p in cusum(counts, start=10, trans=trans):
            assert p.upperbound is not None
            if trans != "standard":  # exact (not ceiled) boundary: alarm iff x >= bound
                assert p.alarm == (p.count >= p.upperbound - 1e-9)
            else:
                assert p.alarm == (p.count >= p.upperbound)


def test_cusum_explicit_m_and_errors() -> None:
    assert cusum([0, 0, 5], start=2, m=1.0)[0].alarm  # (5-1)/1 - 1.04 = 2.96 >= 2.26
    with pytest.raises(ValueError):
        cusum([1, 2, 3], start=0)
    with pytest.raises(ValueError, match="m must be > 0"):
        cusum([0, 0, 3], start=2)


def test_cusum_flags_the_2011_outbreak(salmonella: list[dict[str, str]]) -> None:
    points = cusum(counts_of(salmonella), start=first_index(salmonella, 2011))
    weeks = alarm_weeks(salmonella, points, 2011)
    assert min(weeks) == 44  # first alarm at the outbreak start


# ---------------------------------------------------------------- threshold / Poisson


def test_threshold_window() -> None:
    points = threshold([1, 2, 5, 0, 3], start=0, threshold=4)
    assert [p.alarm for p in points] == [False, False, True, False, False]
    points = threshold([1, 2, 2, 0, 3], start=0, threshold=4, window=2)
    assert [p.upperbound for p in points] == [None, 3, 2, 2, 4]
    assert [p.alarm for p in points] == [False, False, False, False, False]
    assert threshold([3, 2], start=0, threshold=4, window=2)[1].alarm


def poisson_quantile(lam: float, q: float) -> int:
    k, term = 0, math.exp(-lam)
    cdf = term
    while cdf < q:
        k += 1
        term *= lam / k
        cdf += term
    return k


def test_poisson_rolling_baseline() -> None:
    counts = [0, 1, 0, 0, 2, 0, 1] * 4 + [0, 5, 6]
    points = poisson(counts, start=28)
    lam = 16 / 28
    assert points[0].upperbound == poisson_quantile(lam, 0.999)  # = 4
    assert points[0].upperbound == 4
    assert [p.alarm for p in points] == [False, True, True]
    assert poisson(counts, start=0)[27].upperbound is None
    assert poisson([0] * 28 + [1], start=28)[0].alarm  # empty baseline: any case alarms


# ---------------------------------------------------------------- EWMA


def test_ewma_first_point_by_hand() -> None:
    y = [2.0, 3, 1, 4, 2, 3, 2, 1, 3, 2, 9, 3] + [2.0] * 20
    g, w1, w2 = 2, 0.4, 0.9
    z1 = z2 = y[0]
    for v in y[1:9]:
        z1, z2 = w1 * v + (1 - w1) * z1, w2 * v + (1 - w2) * z2
    ref = y[0:7]  # first tested point is index 9, baseline ends g=2 points before it
    mean, sd, n = statistics.mean(ref), statistics.stdev(ref), 7
    from scipy.stats import t as student_t

    warn = round(float(student_t.ppf(0.95, n - 1)), 5)
    stats = []
    for w, zp in ((w1, z1), (w2, z2)):
        corr = math.sqrt(w / (2 - w) + 1 / n - 2 * (1 - w) ** (g + 1) * (1 - (1 - w) ** n) / n)
        const = (0.1289 - (0.2414 - 0.1826 * (1 - w) ** 4) * math.log(0.5)) * (w / warn)
        sigma = max((w / warn) * (0.01 + 0.05 * (1 - w) ** 2), sd * corr + const)
        stats.append((w * y[9] + (1 - w) * zp - mean) / sigma)
    p = min(1 - float(student_t.cdf(s, n - 1)) for s in stats)
    result = ewma_pvalues(y)
    assert result[8] is None
    assert result[9] is not None
    assert result[9][0] == pytest.approx(p, rel=1e-12)


def test_ewma_alarms_and_bound_agree() -> None:
    rng = np.random.default_rng(7)
    y = [float(v) for v in rng.poisson(4, 120)]
    y[100] = 25.0
    points = ewma(y, start=0)
    assert points[8].upperbound is None and points[9].upperbound is not None
    assert points[100].alarm
    for p in points[9:]:
        assert p.upperbound is not None
        assert p.alarm == (p.count > p.upperbound + 1e-9) or abs(p.count - p.upperbound) < 1e-6
    assert sum(p.alarm for p in points) <= 5
    yellow = ewma(y, start=0, alpha=0.05)
    assert sum(p.alarm for p in yellow) >= sum(p.alarm for p in points)


def test_ewma_needs_baseline_plus_guard_band() -> None:
    assert all(p.upperbound is None for p in ewma([1.0] * 30, start=0))
    with pytest.raises(ValueError):
        ewma([1.0] * 40, start=0, baseline=6)


def test_ewma_flags_the_2011_outbreak(salmonella: list[dict[str, str]]) -> None:
    points = ewma(counts_of(salmonella), start=first_index(salmonella, 2011))
    assert {45, 46} <= alarm_weeks(salmonella, points, 2011)


# ---------------------------------------------------------------- Farrington


def test_farrington_threshold_matches_surveillance_test_value() -> None:
    # surveillance test-farringtonFlexible.R: predFit 5, se 0.2, phi 1, "2/3", alpha 0.05
    assert _upper_delta(5.0, 0.2, 1.0, 0.05) == pytest.approx(9.1154825, abs=1e-6)
    score = (8 - 5) / (_upper_delta(5.0, 0.2, 1.0, 0.05) - 5)
    assert score == pytest.approx(0.7289546, abs=1e-6)


def test_farrington_weights_match_surveillance_test_values() -> None:
    s = np.array([0.0] * 5 + [2.0] * 5)
    assert assign_weights(s, 0.0).tolist() == pytest.approx([1.6] * 5 + [0.4] * 5)
    assert assign_weights(np.zeros(10), 0.0).tolist() == pytest.approx([1.0] * 10)


def test_farrington_reference_dates_match_surveillance_test() -> None:
    refs = reference_dates(dt.date(2013, 6, 6), 3)
    assert sorted(refs) == [
        dt.date(2010, 6, 3), dt.date(2011, 6, 9), dt.date(2012, 6, 7), dt.date(2013, 6, 6),
    ]


def test_quasipoisson_irls_matches_direct_likelihood_maximum() -> None:
    rng = np.random.default_rng(3)
    t = np.arange(40.0)
    y = rng.poisson(np.exp(0.5 + 0.03 * t)).astype(float)
    prior = rng.uniform(0.5, 1.5, 40)
    x = np.column_stack([np.ones(40), t])
    fit = glm_quasipoisson(x, y, prior)

    def nll(beta: np.ndarray) -> float:
        eta = x @ beta
        return float(-np.sum(prior * (y * eta - np.exp(eta))))

    direct = minimize(nll, np.zeros(2), method="BFGS", options={"gtol": 1e-10}).x
    assert fit.converged
    assert fit.coef == pytest.approx(direct, abs=1e-5)
    mu = np.exp(x @ direct)
    pearson = float(np.sum(prior * (y - mu) ** 2 / mu) / (40 - 2))
    assert fit.dispersion == pytest.approx(pearson, rel=1e-5)
    info = x.T @ (x * (prior * mu)[:, None])
    assert fit.cov_unscaled == pytest.approx(np.linalg.inv(info), rel=1e-5)


def test_farrington_flags_2011_outbreak_and_is_quiet_in_calm_years(
    salmonella: list[dict[str, str]],
) -> None:
    y = counts_of(salmonella)
    dates = [dt.date.fromisoformat(r["date"]) for r in salmonella]
    start = default_start(dates)
    assert start == 52 * 5 + 3  # R's default range start freq*b+w+1 (1-based)
    points = farrington_flexible(y, dates=dates, start=start)
    assert OUTBREAK_WEEKS <= alarm_weeks(salmonella, points, 2011)
    for calm in (2009, 2010, 2013):
        assert len(alarm_weeks(salmonella, points, calm)) <= 3, calm
    for p in points:
        if p.upperbound is None:
            assert not p.alarm
            assert sum(y[max(0, p.index - 3) : p.index + 1]) < 5  # limit54
        else:
            assert p.alarm == (p.count > p.upperbound and p.count != 0)


def test_farrington_without_history_has_no_bound() -> None:
    dates = [dt.date(2020, 1, 6) + dt.timedelta(weeks=i) for i in range(60)]
    points = farrington_flexible([3.0] * 60, dates=dates, start=0)
    assert all(p.upperbound is None for p in points)
    with pytest.raises(ValueError):
        farrington_flexible([1.0] * 59, dates=dates, start=0)


R_FARRINGTON = Path(__file__).parent / "data" / "farrington_flexible_salmonella_r.csv"


def test_farrington_matches_r_on_every_week_of_2011_and_2012(
    salmonella: list[dict[str, str]],
) -> None:
    """R's own output (tests/detection/data/farrington_flexible_salmonella.R) with the
    control of issue 17: every upper bound and every alarm, 2011-08-29 included (there R's
    summary.glm dispersion from the overwritten model$weights sets the bound: 5.8163, where
    the textbook dispersion gives 7.34 and no alarm)."""
    with R_FARRINGTON.open(newline="") as fh:
        reference = {row["date"]: row for row in csv.DictReader(fh)}
    dates = [dt.date.fromisoformat(r["date"]) for r in salmonella]
    start = next(i for i, d in enumerate(dates) if d.year == 2011)
    end = max(i for i, d in enumerate(dates) if d.year == 2012) + 1
    points = farrington_flexible(
        counts_of(salmonella)[:end], dates=dates[:end], start=start, b=3, w=3, alpha=0.01,
        weights_threshold=2.58, past_weeks_not_included=26)
    assert len(points) == len(reference) == 105
    for p in points:
        want = reference[dates[p.index].isoformat()]
        if want["upperbound"] == "NA":  # limit54: too few cases for a bound
            assert p.upperbound is None, want
        else:
            assert p.upperbound == pytest.approx(float(want["upperbound"]), abs=1e-3), want
        assert p.alarm == (want["alarm"] == "1"), want
    late_summer = reference["2011-08-29"]
    assert late_summer["alarm"] == "1"
    assert points[dates.index(dt.date(2011, 8, 29)) - start].alarm
