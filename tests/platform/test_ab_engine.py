"""The A/B engine is generic: a use case declares its unit, label, primary metric and guardrails
(ABSpec) and the engine tests them. Here a click-through test by user, not fraud's spec."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from jobs.platform.ab_analysis import ABConfig, analyse
from jobs.platform.use_case import ABGuardrail, ABMetric, ABSpec

FAST = ABConfig(n_boot=200, n_boot_costly=20, n_perm=200, seed=2, min_positives=20)

CTR = ABMetric("ctr", lambda a: float(a.y.mean()) if len(a) else float("nan"))
SLOTS_PER_USER = ABMetric(
    "impressions_per_user", lambda a: len(a) / max(1, len(np.unique(a.unit))), higher_is_better=False
)
SPEC = ABSpec(
    log_columns=("impression_id", "user_id", "shown_at", "score", "model_version", "arm"),
    unit="user_id",
    row_id="impression_id",
    label="clicked",
    time_column="shown_at",
    primary=CTR,
    guardrails=(ABGuardrail(SLOTS_PER_USER, rule="ratio"),),
    support="clicks",
)


def impressions(ctr_champion=0.05, ctr_challenger=0.05, users=4000, share=0.5, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    per_user = rng.poisson(10, users) + 1
    user = np.repeat(np.arange(users), per_user)
    arm_of_user = np.where(rng.random(users) < share, "challenger", "champion")
    arm = arm_of_user[user]
    taste = rng.gamma(2.0, 0.5, users)[user]  # users differ: clicks cluster by user
    p = np.where(arm == "challenger", ctr_challenger, ctr_champion) * taste
    return pd.DataFrame(
        {
            "impression_id": np.arange(len(user)),
            "user_id": user,
            "shown_at": pd.Timestamp("2024-01-01")
            + pd.to_timedelta(rng.integers(0, 7 * 86400, len(user)), "s"),
            "score": rng.random(len(user)),
            "model_version": np.where(arm == "challenger", "7", "6"),
            "arm": arm,
            "clicked": (rng.random(len(user)) < np.clip(p, 0, 1)).astype(int),
        }
    )


def test_a_higher_click_rate_is_promoted_by_the_declared_metric():
    r = analyse(impressions(ctr_challenger=0.07), SPEC, FAST)
    assert r.recommendation == "promote", r.reasons
    assert r.difference["metric"] == "ctr" and r.difference["value"] > 0
    assert r.difference["test"].startswith("user_id permutation")
    assert r.arms["challenger"]["clicks"] > 0 and r.arms["champion"]["units"] > 1000
    assert r.guardrails["impressions_per_user"]["passed"]
    assert r.challenger_version == "7"


def test_a_lower_click_rate_is_kept():
    r = analyse(impressions(ctr_challenger=0.03), SPEC, FAST)
    assert r.recommendation == "keep" and "worse" in r.reasons[0]


def test_lower_is_better_primary():
    bounce = ABMetric("no_click_rate", lambda a: float(1 - a.y.mean()), higher_is_better=False)
    spec = ABSpec(**{**SPEC.__dict__, "primary": bounce, "guardrails": ()})
    r = analyse(impressions(ctr_challenger=0.07), spec, FAST)
    assert r.difference["value"] < 0 and r.recommendation == "promote", r.reasons


def test_too_few_positives_extends_naming_the_support():
    r = analyse(impressions(ctr_champion=0.002, ctr_challenger=0.002, users=500), SPEC, FAST)
    assert r.recommendation == "extend" and "clicks" in r.reasons[0]


def test_missing_columns_are_named():
    with pytest.raises(ValueError, match=r"clicked"):
        analyse(impressions().drop(columns="clicked"), SPEC, FAST)


def _verdict(value: float, ci: tuple[float, float], p: float):
    from jobs.platform.ab_analysis import recommend

    arms = {"champion": {"clicks": 500}, "challenger": {"clicks": 500}}
    difference = {"value": value, "ci": list(ci), "p_value": p}
    return recommend(arms, difference, {}, ABConfig(min_positives=20), SPEC)


@pytest.mark.parametrize(
    ("value", "ci", "expected"),
    [
        (+0.010, (-0.050, -0.010), "keep"),  # the bug: a CI wholly below 0 with a positive estimate promoted
        (+0.010, (+0.001, +0.020), "promote"),
        (-0.010, (-0.020, -0.001), "keep"),
        (
            -0.010,
            (+0.001, +0.050),
            "extend",
        ),  # interval and estimate disagree: no verdict (CI wider than mde)
    ],
)
def test_a_win_needs_the_interval_and_the_estimate_on_the_better_side(value, ci, expected):
    recommendation, reasons = _verdict(value, ci, p=0.01)
    assert recommendation == expected, reasons


def test_lower_is_better_sides_mirror():
    from dataclasses import replace

    from jobs.platform.ab_analysis import recommend

    spec = replace(SPEC, primary=SLOTS_PER_USER)
    arms = {"champion": {"clicks": 500}, "challenger": {"clicks": 500}}
    cfg = ABConfig(min_positives=20)
    below = {"value": -0.2, "ci": [-0.5, -0.1], "p_value": 0.01}  # wholly below 0: fewer, better
    above = {
        "value": -0.2,
        "ci": [+0.1, +0.5],
        "p_value": 0.01,
    }  # wholly above 0: worse, whatever the estimate
    assert recommend(arms, below, {}, cfg, spec)[0] == "promote"
    assert recommend(arms, above, {}, cfg, spec)[0] == "keep"


def test_the_reason_names_the_configured_confidence_level():
    from jobs.platform.ab_analysis import recommend

    arms = {"champion": {"clicks": 500}, "challenger": {"clicks": 500}}
    difference = {"value": 0.01, "ci": [0.001, 0.02], "p_value": 0.01}
    recommendation, reasons = recommend(arms, difference, {}, ABConfig(alpha=0.1, min_positives=20), SPEC)
    assert recommendation == "promote" and "90% CI" in reasons[0] and "95%" not in reasons[0]
