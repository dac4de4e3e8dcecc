"""Group-sequential testing: efficacy boundaries that stay valid when an experiment is looked at
several times, and the sample size of a group-sequential design.

An A/B test read again every week and stopped the first time ``p < alpha`` has a false-positive
rate far above ``alpha`` (five looks at 0.025 give about 0.07). A group-sequential design spends the
error rate over the looks: the boundary of look ``k`` is set so that, under no effect, the chance of
crossing at any look up to ``k`` equals ``alpha(t_k)``, a *spending function* of the information
fraction ``t_k`` (the share of the planned information seen so far; Lan & DeMets 1983). Looks need
not be planned in advance, only their information fractions recorded: each boundary depends on the
fractions of the earlier looks, so the A/B engine records every look.

Spending functions (one-sided level ``alpha``):

* ``obrien_fleming`` (Lan-DeMets O'Brien-Fleming type): ``2 - 2 Phi(z_{1-alpha/2} / sqrt(t))``,
  almost nothing spent early (a first look at t = 0.25 needs z > 4.3), the final boundary close to
  the fixed-sample one;
* ``pocock`` (Lan-DeMets Pocock type): ``alpha ln(1 + (e - 1) t)``, even boundaries.

The statistic at look ``k`` is ``Z_k = estimate / standard error``; under the usual asymptotics the
``Z_k`` are jointly normal with ``corr(Z_i, Z_j) = sqrt(t_i / t_j)`` (canonical joint distribution,
Jennison & Turnbull 2000, ch. 3). Crossing probabilities are computed by numerical integration of the
score process ``S_k = Z_k sqrt(t_k)`` (independent normal increments) on a grid — deterministic, no
Monte-Carlo error.

Efficacy only: an experiment that does not cross its boundary by the final look is not promoted.
Stopping early for harm (the challenger significantly worse) never raises the false-promotion rate.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy.optimize import brentq
from scipy.stats import norm

Spending = Literal["obrien_fleming", "pocock"]
SPENDING_FUNCTIONS: tuple[str, ...] = ("obrien_fleming", "pocock")
_GRID = 501  # grid points of the score process per look
_LOWER = 9.0  # the grid's lower end, in standard deviations of the score (beyond: negligible mass)


def spent(t: float, alpha: float, spending: Spending = "obrien_fleming") -> float:
    """The error rate allowed up to information fraction ``t`` (``alpha`` from ``t >= 1`` on)."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha: value {alpha} is invalid; rule: 0 < alpha < 1")
    if t <= 0:
        return 0.0
    t = min(float(t), 1.0)
    if spending == "obrien_fleming":
        return float(2.0 - 2.0 * norm.cdf(norm.ppf(1 - alpha / 2) / math.sqrt(t)))
    if spending == "pocock":
        return float(alpha * math.log(1 + (math.e - 1) * t))
    raise ValueError(f"spending: value {spending!r} is unknown; rule: one of {SPENDING_FUNCTIONS}")


def _check_fractions(fractions: Sequence[float]) -> np.ndarray:
    t = np.asarray(fractions, dtype="float64")
    if t.ndim != 1 or not len(t):
        raise ValueError("fractions: no look; rule: at least one information fraction")
    if (t <= 0).any() or (np.diff(t) <= 0).any():
        raise ValueError(
            f"fractions: values {t.round(4).tolist()}; rule: positive and strictly increasing (one per look)"
        )
    return t


class _Process:
    """The score process ``S_k = Z_k sqrt(t_k)`` (drift ``theta t_k``) continued below the boundaries:
    its sub-density on a grid after each look, and the probability of crossing at the next one."""

    def __init__(self, theta: float = 0.0) -> None:
        self.theta = theta
        self.t = 0.0
        self.grid: np.ndarray | None = None  # S values
        self.density: np.ndarray | None = None  # sub-density of S on the grid (paths not yet stopped)
        self.weights: np.ndarray | None = None  # trapezoid weights of the grid

    def _increment(self, t: float) -> tuple[float, float]:
        dt = t - self.t
        return self.theta * dt, math.sqrt(dt)

    def cross_probability(self, t: float, z: float) -> float:
        """P(not stopped before, and Z at fraction ``t`` >= ``z``)."""
        mean, sd = self._increment(t)
        bound = z * math.sqrt(t)
        if self.grid is None:
            return float(norm.sf((bound - mean) / sd))
        return float(np.sum(self.weights * self.density * norm.sf((bound - self.grid - mean) / sd)))

    def advance(self, t: float, z: float) -> None:
        """Keep the paths that did not cross ``z`` at fraction ``t``."""
        mean, sd = self._increment(t)
        upper = z * math.sqrt(t) if math.isfinite(z) else self.theta * t + _LOWER * math.sqrt(t)
        lower = min(upper, self.theta * t) - _LOWER * math.sqrt(t)
        grid = np.linspace(lower, upper, _GRID)
        h = grid[1] - grid[0]
        weights = np.full(_GRID, h)
        weights[[0, -1]] = h / 2
        if self.grid is None:
            density = norm.pdf((grid - mean) / sd) / sd
        else:
            kernel = norm.pdf((grid[:, None] - self.grid[None, :] - mean) / sd) / sd
            density = kernel @ (self.weights * self.density)
        self.t, self.grid, self.density, self.weights = t, grid, density, weights


def efficacy_bounds(
    fractions: Sequence[float], alpha: float, spending: Spending = "obrien_fleming", *, final: bool = False
) -> np.ndarray:
    """The z boundaries of looks at the given information fractions. A look at ``t >= 1`` spends what
    is left of ``alpha``; so does the last look when ``final`` (an experiment stopped at its maximum
    duration before reaching its planned information). ``inf`` where a look has nothing to spend."""
    t = _check_fractions(fractions)
    process = _Process()
    bounds = np.empty(len(t))
    before = 0.0
    for k, tk in enumerate(t):
        last = final and k == len(t) - 1
        target = (alpha if last else spent(tk, alpha, spending)) - before
        if target <= 1e-15:
            bounds[k] = math.inf
        else:
            bounds[k] = brentq(
                lambda z, tk=tk, target=target: process.cross_probability(tk, z) - target, -8, 40
            )
        before += target
        process.advance(tk, bounds[k])
    return bounds


def crossing_probability(fractions: Sequence[float], bounds: Sequence[float], theta: float = 0.0) -> float:
    """P(some look crosses its boundary) when ``E[Z_k] = theta sqrt(t_k)`` (``theta = 0``: the
    design's false-positive rate; ``theta`` = effect / standard error at ``t = 1``: its power)."""
    t = _check_fractions(fractions)
    process = _Process(theta)
    total = 0.0
    for tk, zk in zip(t, bounds, strict=True):
        if math.isfinite(zk):
            total += process.cross_probability(float(tk), float(zk))
        process.advance(float(tk), float(zk))
    return total


def drift_for_power(fractions: Sequence[float], bounds: Sequence[float], power: float) -> float:
    """The drift ``theta`` (effect over the standard error at ``t = 1``) at which the design has
    ``power``."""
    if not 0 < power < 1:
        raise ValueError(f"power: value {power} is invalid; rule: 0 < power < 1")
    return float(brentq(lambda th: crossing_probability(fractions, bounds, th) - power, 0.0, 20.0))


@functools.lru_cache(maxsize=256)
def inflation_factor(looks: int, alpha: float, power: float, spending: Spending = "obrien_fleming") -> float:
    """The maximum information of ``looks`` equally spaced looks relative to a fixed-sample test with
    the same ``alpha`` and ``power`` (1 for one look; about 1.02-1.03 for O'Brien-Fleming)."""
    if looks < 1:
        raise ValueError(f"looks: value {looks} is invalid; rule: at least 1")
    fractions = np.arange(1, looks + 1) / looks
    bounds = efficacy_bounds(fractions, alpha, spending)
    theta = drift_for_power(fractions, bounds, power)
    return float((theta / (norm.ppf(1 - alpha) + norm.ppf(power))) ** 2)


def power_at(information: float, looks: int, alpha: float, spending: Spending = "obrien_fleming") -> float:
    """The power of ``looks`` equally spaced looks when the effect is ``sqrt(information)`` standard
    errors at the last look (``information`` = effect^2 / variance of the final estimate)."""
    fractions = np.arange(1, looks + 1) / looks
    bounds = efficacy_bounds(fractions, alpha, spending)
    return crossing_probability(fractions, bounds, math.sqrt(max(information, 0.0)))
