"""Group-sequential boundaries (jobs.platform.sequential) against published values and simulation,
and the A/B plan's power calculation (jobs.platform.ab_plan) by hand."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math

import numpy as np
import pytest
from scipy.stats import norm

from jobs.platform import sequential
from jobs.platform.ab_plan import ABPlan, Look, design_plan, sequential_look
from jobs.platform.params import ABConfig


@pytest.mark.parametrize(
    ("looks", "expected"),
    [
        (1, [1.9600]),
        (2, [2.9626, 1.9686]),
        (3, [3.7103, 2.5114, 1.9930]),
        (4, [4.3326, 2.9631, 2.3590, 2.0141]),
        (5, [4.8769, 3.3569, 2.6803, 2.2898, 2.0310]),
    ],
)
def test_obrien_fleming_boundaries_match_the_published_values(looks, expected):
    """Lan-DeMets O'Brien-Fleming spending, one-sided 0.025, equally spaced looks (gsDesign's sfLDOF)."""
    fractions = np.arange(1, looks + 1) / looks
    bounds = sequential.efficacy_bounds(fractions, 0.025)
    assert bounds == pytest.approx(expected, abs=2e-4)
    assert sequential.crossing_probability(fractions, bounds) == pytest.approx(0.025, abs=1e-6)


def test_pocock_boundaries_match_the_published_values():
    assert sequential.efficacy_bounds([0.5, 1.0], 0.025, "pocock") == pytest.approx(
        [2.1570, 2.2010], abs=2e-4
    )


def test_uneven_looks_keep_the_error_rate_and_naive_peeking_does_not():
    """Brownian paths under no effect, looked at on days 5, 12, 14, 30 of 30: the spending boundaries
    cross with probability alpha, testing each look at 1.96 with about twice that."""
    fractions = np.array([5, 12, 14, 30]) / 30
    bounds = sequential.efficacy_bounds(fractions, 0.025)
    rng = np.random.default_rng(0)
    steps = rng.normal(size=(400_000, 4)) * np.sqrt(np.diff(np.r_[0, fractions]))
    z = np.cumsum(steps, axis=1) / np.sqrt(fractions)
    sequential_rate = (z >= bounds).any(axis=1).mean()
    naive_rate = (z >= norm.ppf(0.975)).any(axis=1).mean()
    assert sequential_rate == pytest.approx(0.025, abs=0.0015)
    assert naive_rate > 0.05
    # power too: a drift of theta standard errors at t = 1
    theta = 2.8
    drifted = z + theta * np.sqrt(fractions)
    assert sequential.crossing_probability(fractions, bounds, theta) == pytest.approx(
        (drifted >= bounds).any(axis=1).mean(), abs=0.003
    )


def test_a_final_look_before_the_planned_information_spends_the_rest():
    early = sequential.efficacy_bounds([0.3, 0.6], 0.025, final=True)
    assert sequential.crossing_probability([0.3, 0.6], early) == pytest.approx(0.025, abs=1e-6)
    assert early[0] == pytest.approx(sequential.efficacy_bounds([0.3], 0.025)[0])


def test_inflation_factor_and_power():
    assert sequential.inflation_factor(1, 0.025, 0.8) == pytest.approx(1.0, abs=1e-6)
    assert 1.02 < sequential.inflation_factor(5, 0.025, 0.8) < 1.03
    fixed = (norm.ppf(0.975) + norm.ppf(0.8)) ** 2
    assert sequential.power_at(fixed, 1, 0.025) == pytest.approx(0.8, abs=1e-6)
    assert sequential.power_at(fixed * sequential.inflation_factor(4, 0.025, 0.8), 4, 0.025) == pytest.approx(
        0.8, abs=1e-4
    )


@pytest.mark.parametrize(("fractions", "field"), [([0.5, 0.4], "fractions"), ([], "fractions")])
def test_bad_looks_are_refused(fractions, field):
    with pytest.raises(ValueError, match=field):
        sequential.efficacy_bounds(fractions, 0.025)
    with pytest.raises(ValueError, match="spending"):
        sequential.spent(0.5, 0.025, "linear")


def _plan(cfg: ABConfig, variance=4e-4, positives=500, per_day=100.0, share=0.5):
    return design_plan(
        variance,
        positives,
        per_day,
        cfg,
        design="canary",
        share=share,
        start=dt.date(2024, 1, 1),
        metric="average_precision",
        higher_is_better=True,
        challenger_version="2",
        champion_version="1",
    )


def test_the_plan_is_the_power_calculation_by_hand():
    cfg = ABConfig(mde=0.05, alpha=0.025, power=0.8, look_every_days=7, max_days=56)
    plan = _plan(cfg)
    w = 4e-4 * 500  # the variance at one positive
    fixed = (norm.ppf(0.975) + norm.ppf(0.8)) ** 2 * w * (1 / 0.5 + 1 / 0.5) / 0.05**2  # 2511.7 positives
    assert plan.planned_looks == 4  # 26 days at 100 positives a day: a look every 7 days
    assert plan.inflation_factor == pytest.approx(sequential.inflation_factor(4, 0.025, 0.8))
    assert plan.planned_positives == pytest.approx(fixed * plan.inflation_factor)
    assert plan.planned_days == math.ceil(plan.planned_positives / 100)
    assert plan.max_days == plan.planned_days and plan.feasible
    assert plan.power_at_max_days == pytest.approx(0.8, abs=1e-3)
    # a smaller canary needs more: 1/q + 1/(1-q) = 11.1 at 10 %
    small = _plan(dataclasses.replace(cfg, max_days=400), share=0.1)
    assert small.planned_positives > 2.5 * plan.planned_positives and small.planned_days > 56


def test_an_mde_the_traffic_cannot_reach_keeps_max_days_and_records_its_power():
    cfg = ABConfig(mde=0.01, max_days=28, look_every_days=7)
    plan = _plan(cfg, share=0.1)
    assert not plan.feasible and plan.max_days == 28 and plan.planned_looks == 4
    assert plan.planned_positives == pytest.approx(100 * 28)
    information = 0.01**2 * 2800 / (4e-4 * 500 * (1 / 0.1 + 1 / 0.9))
    assert plan.power_at_max_days == pytest.approx(sequential.power_at(information, 4, cfg.alpha))
    assert plan.power_at_max_days < 0.2


def test_looks_accumulate_information_and_the_last_day_is_final():
    cfg = ABConfig(mde=0.05)
    plan: ABPlan = _plan(cfg)
    start = dt.date(2024, 1, 1)
    t1, b1, spent1, final1 = sequential_look(plan, [], 700, start + dt.timedelta(days=6), 2.0)
    assert t1 == pytest.approx(700 / plan.planned_positives) and not final1
    assert b1 == pytest.approx(sequential.efficacy_bounds([t1], cfg.alpha)[0])
    assert spent1 == pytest.approx(sequential.spent(t1, cfg.alpha))
    first = Look(1, "2024-01-07", "2024-01-14", 700, t1, 2.0, b1, spent1, False, "extend")
    t2, b2, spent2, final2 = sequential_look(plan, [first], 2600, start + dt.timedelta(days=25), 2.0)
    assert final2 and spent2 == cfg.alpha  # the planned information reached
    assert b2 == pytest.approx(sequential.efficacy_bounds([t1, t2], cfg.alpha)[1])
    # the maximum duration ends it before the information is reached
    _, _, _, final3 = sequential_look(plan, [first], 800, plan.last_day, 2.0)
    assert final3
