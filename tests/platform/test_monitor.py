"""Monitoring: Evidently drift detection on shifted vs unshifted data, quality, the retraining decision."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from jobs.platform.monitor import (
    Decision,
    MonitorConfig,
    Thresholds,
    baseline_window,
    compute_drift,
    decide,
    drift_retrain_due,
    last_triggers,
    live_baseline,
    matured_window,
    pending_retrains,
    read_triggers,
    record_trigger,
    split_column_types,
)

FEATURES = ["tx_amount", "nb_tx_7d", "avg_amount_7d", "risk_30d", "tx_during_weekend", "tx_during_night"]


def synthetic(n: int, seed: int, amount_factor: float = 1.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    mean = rng.uniform(5, 100, n)
    amount = np.abs(rng.normal(mean, mean / 2)) * amount_factor
    df = pd.DataFrame(
        {
            "tx_amount": amount,
            "nb_tx_7d": rng.poisson(10, n).astype("float64"),
            "avg_amount_7d": mean * amount_factor,
            "risk_30d": rng.beta(1, 30, n),
            "tx_during_weekend": (rng.random(n) < 2 / 7).astype("int64"),
            "tx_during_night": (rng.random(n) < 0.1).astype("int64"),
        }
    )
    df["score"] = 1 / (1 + np.exp(-(df["tx_amount"] - 150) / 20))
    return df


def test_column_types_follow_the_data():
    num, cat = split_column_types(synthetic(500, 0), FEATURES)
    assert cat == ["tx_during_weekend", "tx_during_night"]
    assert num == ["tx_amount", "nb_tx_7d", "avg_amount_7d", "risk_30d"]


def test_no_drift_between_two_samples_of_the_same_world():
    figures, _ = compute_drift(synthetic(5000, 1), synthetic(5000, 2), FEATURES)
    assert figures["n_drifted"] == 0, figures["features"]
    assert figures["drift_share"] == 0.0
    assert figures["prediction"]["drifted"] is False
    assert figures["features"]["tx_amount"]["method"] == "wasserstein"
    assert figures["features"]["tx_during_night"]["method"] == "jensenshannon"


def test_amount_shift_is_flagged_on_amount_features_and_score():
    ref, cur = synthetic(5000, 1), synthetic(5000, 2, amount_factor=1.5)
    figures, snapshot = compute_drift(ref, cur, FEATURES)
    assert figures["drifted_features"] == ["avg_amount_7d", "tx_amount"]
    assert figures["drift_share"] == pytest.approx(2 / 6)
    assert figures["prediction"]["drifted"] is True
    assert figures["features"]["tx_amount"]["score"] > 0.3
    assert figures["features"]["nb_tx_7d"]["score"] < 0.1
    html = snapshot.get_html_str(as_iframe=False)
    assert "tx_amount" in html


def test_categorical_shift_is_flagged():
    ref, cur = synthetic(5000, 1), synthetic(5000, 2)
    cur["tx_during_night"] = (np.random.default_rng(3).random(len(cur)) < 0.5).astype("int64")
    figures, _ = compute_drift(ref, cur, FEATURES, score_column=None)
    assert figures["drifted_features"] == ["tx_during_night"]
    assert figures["prediction"] is None


def test_missing_feature_names_the_column():
    with pytest.raises(ValueError, match="risk_30d"):
        compute_drift(synthetic(300, 1), synthetic(300, 2).drop(columns="risk_30d"), FEATURES)


def test_thresholds_are_configurable():
    ref, cur = synthetic(5000, 1), synthetic(5000, 2, amount_factor=1.1)
    loose, _ = compute_drift(ref, cur, FEATURES, MonitorConfig(num_threshold=0.5, prediction_threshold=0.5))
    strict, _ = compute_drift(
        ref, cur, FEATURES, MonitorConfig(num_threshold=0.05, prediction_threshold=0.05)
    )
    assert loose["n_drifted"] == 0
    assert "tx_amount" in strict["drifted_features"]


def test_matured_window():
    assert matured_window(dt.date(2018, 5, 20), 7, 7) == (dt.date(2018, 5, 7), dt.date(2018, 5, 13))


# --- decide -----------------------------------------------------------------------------------
def summary(date="2018-05-20", share=0.0, pred=0.0, ap=0.5, frauds=50, base_ap=0.6) -> dict:
    return {
        "date": date,
        "drift": {
            "n_features": 10,
            "drift_share": share,
            "drifted_features": ["tx_amount"] if share else [],
            "prediction": {"score": pred, "method": "wasserstein"},
        },
        "quality": {"average_precision": ap, "frauds": frauds},
        "baseline": {"average_precision": base_ap},
    }


def test_decide_quiet_day():
    d = decide(summary(), Thresholds(), {})
    assert d == Decision(date="2018-05-20", retrain=False)
    assert d.reason == ""


def test_decide_each_cause():
    t = Thresholds(drift_share=0.3, prediction_drift=0.1, max_quality_drop=0.3)
    assert decide(summary(share=0.4), t, {}).causes == ["feature_drift"]
    assert decide(summary(pred=0.2), t, {}).causes == ["prediction_drift"]
    assert decide(summary(ap=0.3), t, {}).causes == ["quality_decay"]  # 50% below 0.6
    both = decide(summary(share=0.5, pred=0.5), t, {})
    assert both.retrain and both.causes == ["feature_drift", "prediction_drift"]
    assert "feature_drift: drift share 0.50 >= 0.30 (tx_amount)" in both.reason
    assert both.reason.startswith("monitoring 2018-05-20:")


def test_decide_ignores_quality_on_too_few_frauds_and_missing_sections():
    t = Thresholds(min_positives=20)
    assert not decide(summary(ap=0.05, frauds=5), t, {}).retrain
    assert not decide({"date": "2018-05-20", "drift": None, "quality": None}, t, {}).retrain
    floor = Thresholds(min_quality=0.4)
    assert decide(summary(ap=0.35, base_ap=None), floor, {}).causes == ["quality_decay"]


def test_decide_reads_a_baseline_only_with_enough_positives():
    t = Thresholds(min_positives=20, max_quality_drop=0.3)
    thin = summary(ap=0.3)
    thin["baseline"]["frauds"] = 19  # the baseline's own support: too few to compare with
    assert not decide(thin, t, {}).retrain
    thin["baseline"]["frauds"] = 20
    assert decide(thin, t, {}).causes == ["quality_decay"]
    assert not decide({**summary(ap=0.3), "baseline": None}, t, {}).retrain  # not established: no decay


def _champion(holdout_end, train_end=dt.date(2018, 5, 10), tags=None):
    from jobs.platform.monitor import Champion

    return Champion(
        model=None, version="3", threshold=None, run_id=None, model_id=None, train_start=None,
        train_end=train_end, holdout={"average_precision": 0.9}, holdout_end=holdout_end, tags=tags or {},
    )  # fmt: skip


def test_live_baseline_is_the_first_matured_week_after_the_holdout(layout):
    settings = layout.settings
    delay = settings.case.label_delay_days
    cfg = MonitorConfig(window_days=7)
    champion = _champion(dt.date(2018, 5, 18))
    assert champion.selected_through == dt.date(2018, 5, 18)
    assert _champion(None).selected_through == dt.date(2018, 5, 10)  # no holdout logged: training end
    window = baseline_window(dt.date(2018, 5, 18), 7)
    assert window == (dt.date(2018, 5, 19), dt.date(2018, 5, 25))
    matured = window[1] + dt.timedelta(days=delay)

    # before its labels matured: no baseline (the holdout figure is not used), and the note says when
    base, note = live_baseline(champion, matured - dt.timedelta(days=1), cfg, settings, layout, None)
    assert base is None and f"matures on {matured}" in note and "2018-05-19..2018-05-25" in note

    # the day it matured, today's quality of that very window is the baseline (non-figures dropped)
    quality = {"average_precision": 0.61, "frauds": 40, "primary": "average_precision", "flag": True}
    base, note = live_baseline(champion, matured, cfg, settings, layout, quality)
    assert note is None
    assert base == {
        "average_precision": 0.61,
        "frauds": 40.0,
        "window": {"start": "2018-05-19", "end": "2018-05-25"},
        "labels_as_of": matured.isoformat(),
        "source": "first matured live window after the holdout",
    }

    # later days read it from the model version's tag, whatever today's figures are
    kept = _champion(dt.date(2018, 5, 18), tags={"monitoring.baseline": json.dumps(base)})
    assert live_baseline(kept, matured + dt.timedelta(days=9), cfg, settings, layout, {"frauds": 1}) == (
        base,
        None,
    )
    # a tag of other days (another holdout) is not this champion's baseline
    other = _champion(dt.date(2018, 5, 11), tags={"monitoring.baseline": json.dumps(base)})
    fresh, _ = live_baseline(other, matured, cfg, settings, layout, {"average_precision": 0.5})
    assert (
        fresh["window"] == {"start": "2018-05-12", "end": "2018-05-18"} and fresh["average_precision"] == 0.5
    )

    base, note = live_baseline(_champion(None, train_end=None), matured, cfg, settings, layout, quality)
    assert base is None and "no training or holdout window" in note


def test_a_drift_retrain_is_due_when_its_training_window_holds_days_after_the_detection():
    from jobs.platform.evaluate import default_windows

    detected = dt.date(2018, 6, 1)
    for post, delay, holdout in ((1, 7, 7), (7, 7, 7), (3, 1, 3), (2, 0, 1)):
        due = drift_retrain_due(detected, post, delay, holdout)
        w = default_windows(due, 28, holdout, delay)
        # exactly the first date whose default training window reaches post days from the detection
        assert (
            w.train_end == detected + dt.timedelta(days=post - 1)
            and w.holdout_start > w.train_end >= detected
        )
        earlier = default_windows(due - dt.timedelta(days=1), 28, holdout, delay)
        assert earlier.train_end < detected + dt.timedelta(days=post - 1)
    assert drift_retrain_due(detected, 7, 7, 7) == dt.date(2018, 6, 28)  # 6 + 14 + 7 days later
    assert drift_retrain_due(detected, 0, 7, 7) == detected  # 0: at once


def test_a_drift_is_deferred_then_retrains_on_its_due_date(settings, tmp_path):
    from jobs.platform.storage import StorageLayout

    layout = StorageLayout(settings.model_copy(update={"home": tmp_path / "home"}))  # its own trigger state
    t = Thresholds(drift_share=0.3, cooldown_days=7, post_drift_days=7)

    def due(day):
        return drift_retrain_due(day, t.post_drift_days, 7, 7)

    # the detection day: recorded as deferred, no retrain
    d0 = decide(summary(date="2018-06-01", share=0.5), t, {}, {}, due)
    assert not d0.retrain and d0.deferred == {"feature_drift": "2018-06-28"} and d0.causes == []
    record_trigger(layout, d0)
    records = read_triggers(layout)
    pending = pending_retrains(records, "2018-06-02")
    assert pending == {
        "feature_drift": {
            "detected": "2018-06-01",
            "due": "2018-06-28",
            "detail": "drift share 0.50 >= 0.30 (tx_amount)",
        }
    }
    assert last_triggers(records, "2018-06-02") == {}  # a deferral is not a trigger: no cool-down
    assert pending_retrains(records, "2018-06-01") == {}  # only records strictly before the day
    # while pending, the drift still seen is awaiting (no second deferral that would push the date)
    d1 = decide(summary(date="2018-06-10", share=0.5), t, {}, pending, due)
    assert not d1.retrain and d1.awaiting == {"feature_drift": "2018-06-28"} and d1.deferred == {}
    # a quiet day before the due date: nothing
    assert not decide(summary(date="2018-06-27"), t, {}, pending, due).retrain
    # the due date: the retrain fires whether or not the drift is still seen, with the detection's reason
    d2 = decide(summary(date="2018-06-28"), t, {}, pending, due)
    assert d2.retrain and d2.causes == ["feature_drift"]
    assert (
        "drift share 0.50 >= 0.30 (tx_amount) (detected 2018-06-01; retrain deferred to 2018-06-28"
        in d2.reason
    )
    record_trigger(layout, d2, run_id="r1")
    records = read_triggers(layout)
    assert pending_retrains(records, "2018-06-29") == {}  # cleared by the trigger
    assert last_triggers(records, "2018-06-29") == {
        "feature_drift": "2018-06-28"
    }  # cool-down from the retrain
    # quality decay is measured on matured labels: it retrains at once, never deferred
    decay = decide(summary(date="2018-06-02", ap=0.3), t, {}, {}, due)
    assert decay.retrain and decay.causes == ["quality_decay"] and decay.deferred == {}
    # post_drift_days = 0 (or no due rule): a drift retrains at once, as before
    now = decide(summary(date="2018-06-01", share=0.5), t, {}, {}, lambda day: day)
    assert now.retrain and now.causes == ["feature_drift"] and now.deferred == {}


def test_decide_cool_down_per_cause():
    t = Thresholds(cooldown_days=7)
    s = summary(date="2018-05-20", share=0.5, pred=0.5)
    d = decide(s, t, {"feature_drift": "2018-05-15"})
    assert d.causes == ["prediction_drift"] and d.suppressed == ["feature_drift"]
    d = decide(s, t, {"feature_drift": "2018-05-15", "prediction_drift": "2018-05-19"})
    assert not d.retrain and d.suppressed == ["feature_drift", "prediction_drift"]
    d = decide(s, t, {"feature_drift": "2018-05-13", "prediction_drift": "2018-05-13"})  # 7 days ago: over
    assert d.causes == ["feature_drift", "prediction_drift"]


def test_trigger_state_is_idempotent_and_only_looks_back(layout):
    d1 = decide(summary(date="2018-05-10", share=0.5), Thresholds(), {})
    record_trigger(layout, d1, run_id="r1")
    record_trigger(layout, d1, run_id="r1-rerun")  # the same date again: replaced, not duplicated
    records = read_triggers(layout)
    assert [r["date"] for r in records] == ["2018-05-10"]
    assert records[0]["train_run_id"] == "r1-rerun"
    assert last_triggers(records, "2018-05-10") == {}  # re-running the trigger day sees no earlier trigger
    assert last_triggers(records, "2018-05-12") == {"feature_drift": "2018-05-10"}
    later = decide(summary(date="2018-05-12", share=0.5), Thresholds(), last_triggers(records, "2018-05-12"))
    assert not later.retrain and later.suppressed == ["feature_drift"]
    json.dumps(later.to_dict())


@pytest.mark.airflow
def test_dag_wiring():
    from tests.support.dags import load_dag

    dag = load_dag("fraud_monitor_and_retrain")
    assert dag.doc_md and "cool-down" in dag.doc_md
    assert set(dag.params) >= {
        "drift_share",
        "prediction_drift",
        "max_quality_drop",
        "cooldown_days",
        "window_days",
    }
    assert dag.params.get_param("cooldown_days").schema["type"] == "integer"
    trigger = dag.get_task("trigger_train_model")
    assert trigger.trigger_dag_id == "fraud_train_model"
    assert set(trigger.conf) == {"reason"}
    assert [t.task_id for t in dag.get_task("monitor").downstream_list] == ["decide"]
    assert {t.task_id for t in dag.get_task("decide").downstream_list} == {"should_retrain", "record_trigger"}
    assert [t.task_id for t in dag.get_task("should_retrain").downstream_list] == ["trigger_train_model"]
    assert [t.task_id for t in trigger.downstream_list] == ["record_trigger"]
    assert Thresholds().drift_share == dag.params["drift_share"]
    assert Thresholds().prediction_drift == dag.params["prediction_drift"]
    assert Thresholds().cooldown_days == dag.params["cooldown_days"]


def test_retrain_and_ab_thresholds_are_settings(monkeypatch):
    """The operational thresholds come from settings (env FRAUD_RETRAIN_* / FRAUD_AB_*), defaulting to the
    jobs' typed defaults."""
    from jobs.platform.config import Settings
    from jobs.platform.params import ABConfig

    assert Thresholds.from_settings(Settings()) == Thresholds()
    # the SRM check reads the serving canary share the experiment was configured with
    assert ABConfig.from_settings(Settings()) == ABConfig(canary_share=Settings().serving_canary_share)
    monkeypatch.setenv("FRAUD_RETRAIN_DRIFT_SHARE", "0.4")
    monkeypatch.setenv("FRAUD_AB_MDE", "0.05")
    monkeypatch.setenv("FRAUD_GATE_GUARDRAIL_TOLERANCE", "0.03")
    settings = Settings()
    assert Thresholds.from_settings(settings).drift_share == 0.4
    ab = ABConfig.from_settings(settings)
    assert ab.mde == 0.05 and ab.guardrail_tolerance == 0.03
    with pytest.raises(ValueError, match="drift_share"):
        monkeypatch.setenv("FRAUD_RETRAIN_DRIFT_SHARE", "1.5")
        Settings()
