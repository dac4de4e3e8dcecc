"""The champion/challenger gate is generic: it applies whatever metric spec a use case declares,
in either direction, with no metric name of its own."""

from __future__ import annotations

import pytest

from jobs.platform.evaluate import Evaluation, gate
from jobs.platform.use_case import Floor, GateSpec, Guardrail, MetricSpec, SliceRule, get_use_case

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
