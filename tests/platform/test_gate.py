"""The champion/challenger gate is generic: it applies whatever metric spec a use case declares,
in either direction, with no metric name of its own."""

from __future__ import annotations

import numpy as np
import pytest

from jobs.platform.evaluate import Evaluation, gate
from jobs.platform.resampling import PairedResamples, holm
from jobs.platform.use_case import (
    Floor,
    GateSpec,
    Guardrail,
    MetricSpec,
    PairedBootstrap,
    SliceRule,
    get_use_case,
)

RMSE = MetricSpec("rmse", higher_is_better=False)
COVERAGE = MetricSpec("coverage")
SPEC = GateSpec(
    primary=RMSE,
    margin=0.1,
    guardrails=(Guardrail(COVERAGE, 0.05),),
    floors=(Floor(RMSE, 5.0),),
    slices=SliceRule(RMSE, 0.5, support="n", min_support=10),
)


def ev(rmse: float, coverage: float, slices: dict | None = None, version: str = "1") -> Evaluation:
    return Evaluation(
        ("2018-05-01", "2018-05-07"),
        {"rows": 100.0, "rmse": rmse, "coverage": coverage},
        slices or {"device=mobile": {"n": 50, "rmse": rmse}, "device=tv": {"n": 3, "rmse": 9.0}},
        model_version=version,
    )


def test_first_model_is_judged_by_the_floors_alone():
    assert gate(ev(4.0, 0.1), None, SPEC).promote
    refused = gate(ev(6.0, 0.9), None, SPEC)
    assert not refused.promote and refused.failed()[0]["check"] == "floor.rmse"
    assert refused.failed()[0]["rule"] == "<="


def test_lower_is_better_primary_needs_the_margin():
    champion = ev(3.0, 0.5)
    assert gate(ev(2.8, 0.5, version="2"), champion, SPEC).promote  # 2.8 < 3.0 - 0.1
    close = gate(ev(2.95, 0.5, version="2"), champion, SPEC)
    assert not close.promote and [c["check"] for c in close.failed()] == ["primary.rmse"]
    assert close.failed()[0]["bound"] == pytest.approx(2.9)


def test_guardrail_and_slice_regressions_refuse_a_better_primary():
    champion = ev(3.0, 0.5)
    lost_coverage = gate(ev(2.0, 0.44, version="2"), champion, SPEC)
    assert [c["check"] for c in lost_coverage.failed()] == ["guardrail.coverage"]
    worse_slice = ev(2.0, 0.5, slices={"device=mobile": {"n": 50, "rmse": 3.6}}, version="2")
    assert [c["check"] for c in gate(worse_slice, champion, SPEC).failed()] == ["slice.device=mobile.rmse"]
    # the champion's tv slice has too little support to be gated; a missing supported slice fails
    missing = ev(2.0, 0.5, slices={"device=tv": {"n": 3, "rmse": 1.0}}, version="2")
    assert [c["check"] for c in gate(missing, champion, SPEC).failed()] == ["slice.device=mobile.rmse"]


def test_a_relative_guardrail_scales_with_the_champions_value():
    relative = GateSpec(primary=RMSE, guardrails=(Guardrail(COVERAGE, 0.2, relative=True),))
    champion = ev(3.0, 0.01)
    kept = gate(ev(2.0, 0.0081, version="2"), champion, relative)  # -19 %
    lost = gate(ev(2.0, 0.0079, version="2"), champion, relative)  # -21 %
    assert kept.promote and [c["check"] for c in lost.failed()] == ["guardrail.coverage"]
    assert lost.failed()[0]["bound"] == pytest.approx(0.008)


def test_a_different_holdout_is_an_error():
    other = Evaluation(("2018-05-02", "2018-05-08"), {"rows": 100.0, "rmse": 1.0, "coverage": 1.0})
    with pytest.raises(ValueError, match="same holdout"):
        gate(other, ev(3.0, 0.5), SPEC)


def test_use_cases_are_found_by_name_and_unknown_names_are_refused():
    fraud = get_use_case(name="fraud")
    assert fraud.name == "fraud" and fraud.gate  # registered through the package's entry points
    with pytest.raises(ValueError, match="use_case: value 'nope' is not a registered use case"):
        get_use_case(name="nope")


def test_model_spec_names_an_objective_the_core_cannot_train():
    from jobs.platform.use_case import ModelSpec

    spec = ModelSpec(
        objective="binary:logistic", eval_metric="aucpr", label="y", time_column="t", row_id="id"
    )
    assert spec.positive == "positive" and spec.run_params(None) == {} and not spec.ranker
    with pytest.raises(
        ValueError, match=r"model.objective: value 'reg:squarederror' is not trained by the core"
    ):
        ModelSpec(objective="reg:squarederror", eval_metric="rmse", label="y", time_column="t", row_id="id")


# --- the paired-bootstrap rules, on resamples whose quantiles are known exactly --------------------
BOOT = GateSpec(
    primary=RMSE,
    margin=0.1,
    guardrails=(Guardrail(COVERAGE, 0.05), Guardrail(MetricSpec("rows"), 0.0)),
    floors=(Floor(RMSE, 5.0),),
    slices=SliceRule(RMSE, 0.5, support="n", min_support=10),
    bootstrap=PairedBootstrap(unit="user", statistics=lambda *a: None, resamples=1000, alpha=0.05),
)


def paired(**differences) -> PairedResamples:
    """Resamples in which the challenger is better than the champion by the given draws of ``d``
    (in the good direction; RMSE is lower-is-better); the estimate is the draws' median."""
    draws, estimates = {}, {}
    for name, d in differences.items():
        d = np.asarray(d, dtype=float)
        sign = -1.0 if name.split("/")[-1] == "rmse" else 1.0
        champion = np.full(len(d), 3.0)
        draws[name.replace("__", "=")] = np.column_stack([champion + sign * d, champion])
        estimates[name.replace("__", "=")] = (3.0 + sign * float(np.median(d)), 3.0)
    return PairedResamples("user", 50, len(next(iter(draws.values()))), 0, estimates, draws)


def spread(center: float, half_width: float) -> np.ndarray:
    """1001 evenly spaced draws: the 5 % quantile is exactly ``center - 0.9 * half_width``."""
    return np.linspace(center - half_width, center + half_width, 1001)


def test_paired_primary_needs_the_lower_bound_above_the_margin_not_the_estimate():
    champion, challenger = ev(3.0, 0.5), ev(2.7, 0.5, version="2")
    kept = spread(0.0, 0.01)
    ok = gate(challenger, champion, BOOT, paired(rmse=spread(0.3, 0.2), coverage=kept))  # lower 0.12
    assert ok.promote, ok.reason
    assert "one-sided 95.0% lower bound +0.1200" in ok.reason
    noisy = gate(challenger, champion, BOOT, paired(rmse=spread(0.3, 0.25), coverage=kept))  # lower 0.075
    assert not noisy.promote and [c["check"] for c in noisy.failed()] == ["primary.rmse"]
    (primary,) = noisy.failed()
    assert primary["value"] == pytest.approx(0.075) and primary["estimate"] == pytest.approx(0.3)
    assert primary["bound"] == 0.1 and primary["method"] == "paired bootstrap"
    assert "lower bound +0.0750 not > +0.1000" in noisy.reason
    # a CI wholly on the worse side never promotes, whatever the point estimates say
    worse = gate(challenger, champion, BOOT, paired(rmse=spread(-0.2, 0.1), coverage=kept))
    assert not worse.promote


def test_paired_guardrail_is_a_non_inferiority_test():
    champion, challenger = ev(3.0, 0.5), ev(2.5, 0.5, version="2")
    better = spread(0.5, 0.1)
    # coverage: lower bound -0.04 is within the 0.05 tolerance; -0.06 is not
    assert gate(challenger, champion, BOOT, paired(rmse=better, coverage=spread(0.0, 0.04 / 0.9))).promote
    breach = gate(challenger, champion, BOOT, paired(rmse=better, coverage=spread(0.0, 0.06 / 0.9)))
    assert not breach.promote and [c["check"] for c in breach.failed()] == ["guardrail.coverage"]
    assert breach.failed()[0]["value"] == pytest.approx(-0.06) and breach.failed()[0]["bound"] == -0.05
    # the sign matters: a guardrail that improved passes, the same size of loss refuses
    assert gate(challenger, champion, BOOT, paired(rmse=better, coverage=spread(0.1, 0.01))).promote
    assert not gate(challenger, champion, BOOT, paired(rmse=better, coverage=spread(-0.1, 0.01))).promote
    # a guardrail the bootstrap has no statistic for keeps the point rule
    checks = {c["check"]: c for c in breach.checks}
    assert checks["guardrail.rows"]["method"] == "point" and checks["guardrail.rows"]["passed"]


def draws_with_p(p: float, tolerance: float, n: int = 999) -> np.ndarray:
    """Draws of ``d`` whose harm p-value ``(1 + #{d >= -tolerance}) / (n + 1)`` is exactly ``p``."""
    above = round(p * (n + 1)) - 1
    return np.r_[np.full(above, -tolerance + 0.01), np.full(n - above, -tolerance - 0.2)]


def test_slices_refuse_only_on_a_significant_drop_after_holm():
    champion = ev(
        3.0,
        0.5,
        slices={f"device={d}": {"n": 50, "rmse": 3.0} for d in ("mobile", "tv", "web")}
        | {"device=watch": {"n": 3, "rmse": 3.0}},
    )
    challenger = ev(2.5, 0.5, slices=champion.slices, version="2")
    base = {"rmse": spread(0.5, 0.1), "coverage": spread(0.0, 0.01)}
    clean = {"device__mobile/rmse": draws_with_p(0.5, 0.5), "device__tv/rmse": draws_with_p(0.6, 0.5)}
    # p = 0.02 is below alpha but above alpha / 3 (three slices tested): Holm keeps it
    web = {"device__web/rmse": draws_with_p(0.02, 0.5)}
    holm_keeps = gate(challenger, champion, BOOT, paired(**base, **clean, **web))
    assert holm_keeps.promote, holm_keeps.reason
    checks = {c["check"]: c for c in holm_keeps.checks}
    assert checks["slice.device=web.rmse"]["p_value"] == pytest.approx(0.02)
    assert checks["slice.device=web.rmse"]["holm_level"] == pytest.approx(0.05 / 3)
    assert checks["slice.device=web.rmse"]["slices_tested"] == 3  # the 3-row watch slice is not tested
    refused = gate(
        challenger, champion, BOOT, paired(**base, **clean, **{"device__web/rmse": draws_with_p(0.01, 0.5)})
    )
    assert not refused.promote and [c["check"] for c in refused.failed()] == ["slice.device=web.rmse"]
    assert "significant after Holm (p 0.0100 <= 0.0167)" in refused.reason


def test_holm_step_down_by_hand():
    out = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.001}, alpha=0.05)
    # sorted: d .001 <= .05/4, a .01 <= .05/3, c .03 > .05/2 -> stop; b kept as well
    assert out == {
        "d": (True, pytest.approx(0.0125)),
        "a": (True, pytest.approx(0.05 / 3)),
        "c": (False, pytest.approx(0.025)),
        "b": (False, pytest.approx(0.05)),
    }
