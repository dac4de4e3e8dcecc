"""The A/B engine is generic: a use case declares its unit, label, primary metric and guardrails
(ABSpec) and the engine tests them. Here a click-through test by user, not fraud's spec."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from jobs.platform.ab_analysis import ABConfig, analyse
from jobs.platform.use_case import ABGuardrail, ABMetric, ABSpec

FAST = ABConfig(n_boot=200, n_boot_costly=20, seed=2, min_positives=20)

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
    assert (
        r.difference["test"]
        == "user_id bootstrap of independent arms, null variance from the champion arm, single fixed-sample look"
    )
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


def _verdict(z: float, boundary: float = 1.96, lower: float = 0.005, final: bool = True, guardrails=None):
    """The verdict of one look with the given statistic, boundary and bootstrap bound."""
    from jobs.platform.ab_analysis import recommend

    arms = {"champion": {"clicks": 500}, "challenger": {"clicks": 500}}
    difference = {"value": 0.01 if z > 0 else -0.01, "z": z}
    look = {
        "look": 1 if final else 2,
        "information": 1.0 if final else 0.5,
        "boundary": boundary,
        "final": final,
        "lower_at_boundary": lower,
        "harm_boundary": -1.96,
    }
    return recommend(arms, difference, guardrails or {}, ABConfig(min_positives=20), SPEC, look)


@pytest.mark.parametrize(
    ("z", "boundary", "lower", "final", "expected"),
    [
        # the old bug: a bootstrap interval wholly below 0 with a positive estimate promoted
        (+3.0, 1.96, -0.010, True, "keep"),
        (+3.0, 1.96, -0.010, False, "extend"),
        (+1.97, 1.96, +0.001, True, "promote"),  # just over the boundary
        (+1.95, 1.96, +0.001, True, "keep"),  # just under it at the final look: no gain of the planned size
        (+2.50, 2.96, +0.001, False, "extend"),  # an interim look whose (O'Brien-Fleming) boundary is higher
        (+3.00, 2.96, +0.001, False, "promote"),  # crossing early stops early
        (-2.00, 2.96, -0.020, False, "keep"),  # significantly worse: stopped for harm at any look
        (-1.90, 2.96, -0.020, False, "extend"),
    ],
)
def test_a_look_promotes_only_across_its_boundary(z, boundary, lower, final, expected):
    recommendation, reasons = _verdict(z, boundary, lower, final)
    assert recommendation == expected, reasons
    assert reasons[0].startswith(f"look {1 if final else 2} ({'final' if final else 'interim'}")
    assert f"boundary {boundary:.2f}" in reasons[0]


@pytest.mark.parametrize(
    ("status", "final", "expected"),
    [("breached", False, "keep"), ("inconclusive", False, "extend"), ("inconclusive", True, "keep")],
)
def test_a_guardrail_that_is_not_shown_non_inferior_refuses_a_winning_primary(status, final, expected):
    guardrails = {"impressions_per_user": {"passed": False, "breached": status == "breached"}}
    recommendation, reasons = _verdict(4.0, final=final, guardrails=guardrails)
    assert recommendation == expected and "impressions_per_user" in reasons[0], reasons
    assert _verdict(4.0, final=final, guardrails={"g": {"passed": True, "breached": False}})[0] == "promote"


def test_guardrail_intervals_decide_non_inferiority():
    """Hand-made bootstrap draws: the one-sided bounds decide passed / inconclusive / breached."""
    from jobs.platform.ab_analysis import guardrail_check

    cfg = ABConfig(alpha=0.025, guardrail_tolerance=0.02, max_decision_rate_ratio=1.5)
    metric = ABGuardrail(ABMetric("auc", lambda a: 0.0))
    champion = np.full(1000, 0.90)

    def check(g, shift, spread, value=None):
        draws = 0.90 + shift + spread * np.linspace(-1, 1, 1000)
        ch = {g.metric.name: 0.90 + shift if value is None else value}
        return guardrail_check(
            g, ch, {g.metric.name: 0.90}, {g.metric.name: draws}, {g.metric.name: champion}, cfg
        )

    assert check(metric, -0.005, 0.01)["status"] == "passed"  # [-0.0145, 0.0045] above -0.02
    assert check(metric, -0.005, 0.03)["status"] == "inconclusive"  # lower bound -0.0335
    breached = check(metric, -0.05, 0.01)
    assert breached["status"] == "breached" and breached["ci"][1] == pytest.approx(
        -0.05 + 0.01 * 0.95, abs=1e-4
    )
    # a deterioration test refuses only the shown breach
    noisy = ABGuardrail(metric.metric, test="deterioration")
    assert check(noisy, -0.005, 0.03)["passed"] and not check(noisy, -0.05, 0.01)["passed"]
    # ratio rule: challenger over champion against max_decision_rate_ratio
    rate = ABGuardrail(ABMetric("alerts", lambda a: 0.0, higher_is_better=False), rule="ratio")
    champion = np.full(1000, 0.90)
    ratio = check(rate, 0.90, 0.05)  # challenger ~1.80 / 0.90 = 2.0
    assert ratio["status"] == "breached" and ratio["estimate"] == pytest.approx(2.0)
    assert check(rate, 0.0, 0.05)["status"] == "passed"


def test_an_unplanned_analysis_is_one_fixed_sample_look():
    r = analyse(impressions(ctr_challenger=0.07), SPEC, FAST)
    assert r.plan is None and r.look["final"] and r.look["look"] == 1
    assert r.look["boundary"] == pytest.approx(1.959964, abs=1e-5) and r.look["alpha_spent"] == 0.025


def test_a_canary_is_tested_with_the_null_variance_from_the_champion_arm():
    """se = sqrt(w (1/P_h + 1/P_c)) with w the champion arm's bootstrap variance per positive: the
    challenger's own variance (which shrinks as its metric rises) does not enter the z."""
    from jobs.platform.ab_analysis import null_standard_error

    draws = np.array([0.60, 0.62, 0.58, 0.61, 0.59, 0.63, 0.57, 0.60, 0.62, 0.58])
    w = np.var(draws, ddof=1) * 900
    assert null_standard_error(draws, 900, 100) == pytest.approx(np.sqrt(w * (1 / 100 + 1 / 900)))
    assert np.isnan(null_standard_error(draws, 900, 0)) and np.isnan(null_standard_error(draws[:5], 900, 100))
    r = analyse(impressions(ctr_challenger=0.07), SPEC, FAST)
    c, h = r.arms["champion"], r.arms["challenger"]
    assert r.difference["z"] == pytest.approx(r.difference["value"] / r.difference["se"])
    assert r.difference["se"] != r.difference["se_bootstrap"]
    assert h["clicks"] > c["clicks"] * 0.5  # both arms are large enough for the normal approximation
