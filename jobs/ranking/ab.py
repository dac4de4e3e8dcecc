"""Ranking's online A/B test (``UseCase.ab``, run by the core's :mod:`jobs.platform.ab_analysis`).

The log is the serving prediction log of ``/v1/recommend`` (one row per served slot, arm and model
version from the canary split by user), labelled by :func:`jobs.ranking.evaluation.labelled` with
the clicks and purchases the landed impressions of the same request and slot received. Users are
the randomisation unit (the canary's routing key): the bootstrap moves whole users, so a user's
correlated slates stay together.

* **primary**: CTR, clicks per served slot;
* **guardrails** (non-inferiority by the bootstrap interval, each with its own limit from the
  ranking gate's settings): intra-list category diversity (distinct categories per slate over its
  slots, mean over slates; ``RANKING_GATE_DIVERSITY_TOLERANCE``) and freshness (the share of slots
  holding an item launched in the last :data:`FRESH_DAYS` days; ``RANKING_GATE_FRESHNESS_TOLERANCE``);
* **secondary**: revenue per session (request), reported with its interval, deciding nothing;
* **truth**: the world is simulated, so each arm's report also gives its **true** CTR, the
  expected clicks per slot of the slates as served under the world's click model (click probability,
  the examination of the slot, the session's fatigue), and the result the true difference: what the
  test's verdict is checked against.

Every figure is a ratio of per-row sums, so its bootstrap is computed for all resamples at once
from per-user sums (``ABMetric.weighted``). Canary only: a slate is not a row a shadow model could
score (the row id is the request).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from jobs.platform.use_case import ABGuardrail, ABMetric, ABSpec
from jobs.ranking.schema import EXAMINATION

if TYPE_CHECKING:
    from jobs.platform.config import Settings

LABEL = "clicked"
FRESH_DAYS = 7  # as the business rules' and the offline slate metrics' freshness
LOG_COLUMNS = (
    "request_id",
    "user_id",
    "item_id",
    "slot",
    "category",
    "launched_at",
    "device",
    "requested_at",
    "score",
    "model_version",
    "arm",
    "source",
)


def row_values(clusters) -> dict[str, np.ndarray]:
    """The per-row terms of the ratio metrics, in the clusters' row order (computed once per arm):
    ``one`` (a slot), ``clicked``, ``request`` (1 / the request's slots: a request sums to one),
    ``diversity`` (the request's distinct categories / its slots, spread over its slots the same way),
    ``fresh`` (the item launched within :data:`FRESH_DAYS` days of the request) and ``revenue``."""
    memo = clusters.__dict__.get("_ranking_rows")
    if memo is not None:
        return memo
    f = clusters.frame
    by_request = f.groupby("request_id", sort=False)
    slots = by_request["slot"].transform("size").to_numpy(dtype="float64")
    distinct = by_request["category"].transform("nunique").to_numpy(dtype="float64")
    requested = pd.to_datetime(f["requested_at"])
    launched = pd.to_datetime(f["launched_at"])
    fresh = (launched.notna() & (launched >= requested - pd.Timedelta(days=FRESH_DAYS))).to_numpy()
    memo = {
        "one": np.ones(len(f)),
        "clicked": clusters.y.astype("float64"),
        "request": 1.0 / slots,
        "diversity": distinct / slots / slots,
        "fresh": fresh.astype("float64"),
        "revenue": f["revenue"].to_numpy(dtype="float64") if "revenue" in f else np.zeros(len(f)),
    }
    clusters.__dict__["_ranking_rows"] = memo
    return memo


@dataclass(frozen=True)
class Ratio:
    """``sum(numerator) / sum(denominator)`` over an arm's rows (:func:`row_values` terms)."""

    numerator: str
    denominator: str

    def stat(self, arm) -> float:
        rows = row_values(arm.clusters)
        den = float(rows[self.denominator][arm.idx].sum())
        return float(rows[self.numerator][arm.idx].sum()) / den if den > 0 else math.nan

    def weighted(self, arm) -> Callable[[np.ndarray], np.ndarray]:
        rows = row_values(arm.clusters)
        codes, n = arm.clusters.codes[arm.idx], len(arm.clusters.starts)
        num = np.bincount(codes, weights=rows[self.numerator][arm.idx], minlength=n)
        den = np.bincount(codes, weights=rows[self.denominator][arm.idx], minlength=n)

        def f(counts: np.ndarray) -> np.ndarray:
            with np.errstate(divide="ignore", invalid="ignore"):
                return (counts @ num) / (counts @ den)

        return f


def _metric(name: str, ratio: Ratio) -> ABMetric:
    return ABMetric(name, ratio.stat, weighted=ratio.weighted)


CTR = _metric("ctr", Ratio("clicked", "one"))
DIVERSITY = _metric("diversity", Ratio("diversity", "request"))
FRESHNESS = _metric("freshness", Ratio("fresh", "one"))
REVENUE = _metric("revenue_per_session", Ratio("revenue", "request"))


def true_ctr(frame: pd.DataFrame, world) -> float:
    """The expected clicks per served slot of ``frame``'s slates under the world's click model: the
    user's true click probability of the item on the day and device, times the slot's examination
    probability and the session fatigue of the request's index in its session."""
    if frame.empty:
        return math.nan
    requested = pd.to_datetime(frame["requested_at"])
    expected = np.zeros(len(frame))
    for day, rows in frame.groupby(requested.dt.date.to_numpy(), sort=True):
        where = frame.index.get_indexer(rows.index)
        index = world.requests(day).set_index("request_id")["request_index"]
        request_index = (
            pd.to_numeric(rows["request_id"], errors="coerce").map(index).fillna(0).to_numpy(dtype="float64")
        )
        items = rows["item_id"].to_numpy(dtype="int64")
        known = (items >= 0) & (items < len(world.catalogue(day)))
        slot = rows["slot"].to_numpy(dtype="int64")
        exam = np.where(
            slot < len(EXAMINATION), np.asarray(EXAMINATION)[np.minimum(slot, len(EXAMINATION) - 1)], 0.0
        )
        p = np.zeros(len(rows))
        p[known] = world.click_probability(
            rows["user_id"].to_numpy(dtype="int64")[known],
            items[known],
            day,
            rows["device"].to_numpy()[known],
        )
        expected[where] = p * exam * world.config.fatigue**request_index
    return float(expected.mean())


def ab_spec(settings: Settings) -> ABSpec:
    """The spec for ``settings``' world and guardrail limits."""
    from jobs.ranking.world import World

    gate = settings.case.gate
    world = World(settings.case.world_config())

    def details(sample) -> Mapping[str, Any]:
        frame = sample.clusters.frame.iloc[sample.idx].reset_index(drop=True)
        return {
            "requests": int(frame["request_id"].nunique()),
            "revenue": float(frame["revenue"].sum()) if "revenue" in frame else 0.0,
            "true_ctr": true_ctr(frame, world),
        }

    def truth(champion: Mapping[str, Any], challenger: Mapping[str, Any]) -> Mapping[str, Any]:
        return {
            "source": "the simulated world's click model on the slates as served",
            "true_ctr_champion": champion["true_ctr"],
            "true_ctr_challenger": challenger["true_ctr"],
            "true_ctr_difference": challenger["true_ctr"] - champion["true_ctr"],
        }

    return ABSpec(
        log_columns=LOG_COLUMNS,
        unit="user_id",
        row_id="request_id",
        label=LABEL,
        time_column="requested_at",
        primary=CTR,
        guardrails=(
            ABGuardrail(DIVERSITY, tolerance=gate.diversity_tolerance),
            ABGuardrail(FRESHNESS, tolerance=gate.freshness_tolerance),
        ),
        secondary=(REVENUE,),
        support="clicks",
        arm_details=details,
        truth=truth,
    )
