"""End to end through Airflow: a distribution shift on a known date is flagged, its retrain is deferred
until the training window holds the days after the detection (``post_drift_days``), then runs with the
drift reason, and the retrained model is promoted only if it beats the champion on a holdout after the
detection; the no-drift twin raises no trigger over the same days.

World: 300 customers / 600 terminals, label delay 1 day (so a holdout with matured post-shift labels
exists a few days after the shift; with the default 7-day delay no retrain triggered within days of
a shift can be evaluated after it), holdout 3 days, ``post_drift_days`` 1 (so the deferred retrain is due 5 days after the detection:
0 + 2 x 1 + 3). The history before the monitored days is bulk-
written to the lake from the simulator (the per-day ingest DAG for ~2 months is beyond this test's
budget; it has its own tests); features are built by the ``build_features`` DAG, the champion by
the ``train_model`` DAG, and every monitored day runs ``monitor_and_retrain``. A ``train_model`` run
that the trigger queued is executed with the conf the trigger recorded (``dag.test`` stands in for
the scheduler picking it up).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os

import pytest

from jobs.fraud.simulate import DriftConfig, SimulatorConfig, write_lake

pytestmark = [pytest.mark.slow, pytest.mark.airflow, pytest.mark.spark]

START = dt.date(2018, 4, 1)
SHIFT = dt.date(2018, 5, 24)
TWIN_DAYS = [SHIFT + dt.timedelta(days=i) for i in range(-2, 4)]  # S-2 .. S+3
DRIFT_DAYS = [SHIFT + dt.timedelta(days=i) for i in range(-2, 9)]  # S-2 .. S+8: detection + 5 days
END = DRIFT_DAYS[-1]
RETRAIN_DUE_DAYS = 5  # drift_retrain_due: post_drift_days - 1 + 2 x delay + holdout_days
DETECT_WITHIN_DAYS = 3
INITIAL = {  # the first champion: trained and gated long before the shift
    "reason": "initial champion",
    "train_start": "2018-05-01",
    "train_end": "2018-05-14",
    "holdout_start": "2018-05-16",
    "holdout_end": "2018-05-18",
}
ENV = {"FRAUD_LABEL_DELAY_DAYS": "1", "FRAUD_HOLDOUT_DAYS": "3", "FRAUD_RETRAIN_POST_DRIFT_DAYS": "1"}


@contextlib.contextmanager
def platform_at(home):
    """Point the settings (and the MLflow env derived from them) at another home, then restore."""
    from jobs.platform.config import get_settings

    saved = {k: os.environ.get(k) for k in (*ENV, "MLP_HOME", "MLFLOW_TRACKING_URI")}
    os.environ.update(ENV, MLP_HOME=str(home))
    get_settings.cache_clear()
    os.environ["MLFLOW_TRACKING_URI"] = get_settings().mlflow_tracking_uri
    try:
        yield get_settings()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        get_settings.cache_clear()


def triggered_run(day: dt.date):
    """The train_model run the monitor DAG queued for ``day`` (None if it did not trigger)."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        dr = session.scalar(
            select(DagRun).where(DagRun.dag_id == "fraud_train_model", DagRun.run_id == f"retrain__{day}")
        )
        return None if dr is None else {"conf": dict(dr.conf or {}), "logical_date": dr.logical_date}


def play(home, drift: bool, days: list[dt.date]) -> dict:
    from jobs.platform import registry
    from jobs.platform.monitor import read_summary, read_triggers
    from jobs.platform.storage import StorageLayout
    from tests.support.dags import run_dag

    with platform_at(home) as settings:
        layout = StorageLayout(settings)
        cfg = SimulatorConfig(
            n_customers=300,
            n_terminals=600,
            dup_rate=0.0,
            label_delay_days=settings.case.label_delay_days,
            drift=DriftConfig(SHIFT, amount_factor=2.5) if drift else DriftConfig(),
        )
        write_lake(cfg, START, END, layout)
        run_dag(
            "fraud_build_features",
            START.isoformat(),
            conf={"date": START.isoformat(), "end": END.isoformat()},
        )
        run_dag("fraud_train_model", "2018-05-20", conf=INITIAL)
        first_champion = registry.champion_version(settings)
        assert first_champion is not None, registry.history(settings)
        retrains = []
        for day in days:
            run_dag("fraud_monitor_and_retrain", day.isoformat())
            queued = triggered_run(day)
            if queued is not None:
                run_dag("fraud_train_model", queued["logical_date"].isoformat(), conf=queued["conf"])
                retrains.append({"day": day, **queued})
        return {
            "settings": settings,
            "layout": layout,
            "first_champion": first_champion,
            "summaries": {d: read_summary(layout, d) for d in days},
            "triggers": read_triggers(layout),
            "retrains": retrains,
            "history": registry.history(settings),
            "champion": registry.champion_version(settings),
        }


def test_drift_is_flagged_and_drives_a_gated_retrain(airflow_db, tmp_path):
    story = play(tmp_path / "drift", drift=True, days=DRIFT_DAYS)
    layout = story["layout"]

    # reports for every monitored day
    for day, summary in story["summaries"].items():
        part = layout.path("reports", day, "monitoring")
        assert (part / "summary.json").exists() and (part / "report.html").exists(), day
        assert summary["model_version"] is not None

    # flagged within a bounded number of days after the shift, never before it, and deferred: the
    # detection is recorded with its due date and no retrain runs before it
    detections = [t for t in story["triggers"] if t.get("deferred")]
    assert detections, {str(d): s["drift"]["prediction"] for d, s in story["summaries"].items()}
    detected = dt.date.fromisoformat(detections[0]["date"])
    assert SHIFT <= detected <= SHIFT + dt.timedelta(days=DETECT_WITHIN_DAYS), story["triggers"]
    due = detected + dt.timedelta(days=RETRAIN_DUE_DAYS)
    assert set(detections[0]["deferred"]) & {"feature_drift", "prediction_drift"}
    assert set(detections[0]["deferred"].values()) == {due.isoformat()} and detections[0]["causes"] == []
    fired = [t for t in story["triggers"] if t["causes"]]
    assert fired and fired[0]["date"] == due.isoformat(), story["triggers"]
    assert len([t for t in fired if t["date"] == due.isoformat()]) == 1
    first = fired[0]
    assert set(first["causes"]) == set(detections[0]["deferred"])
    assert f"detected {detected}" in first["reason"]
    assert [r["day"] for r in story["retrains"]][0] == due  # nothing was queued before the due date

    # the training DAG ran with the drift reason ...
    retrain = story["retrains"][0]
    reason = retrain["conf"]["reason"]
    assert reason == first["reason"] and "drift" in reason
    entries = [
        e
        for e in story["history"]
        if e.get("reason", "").startswith(reason[:40]) or reason in e.get("reason", "")
    ]
    challenger = next(e for e in entries if e["action"] == "challenger")
    outcome = next(
        e
        for e in story["history"]
        if e["version"] == challenger["version"] and e["action"] in ("promote", "refuse")
    )

    # ... on a holdout that includes the post-shift days, and the gate's decision follows the metrics
    from jobs.platform import registry

    run = registry.client(story["settings"]).get_run(challenger["run_id"])
    params = run.data.params
    # it trained on the detection day and was gated on the days after it, not on pre-drift traffic
    assert dt.date.fromisoformat(params["train_end"]) == detected
    assert dt.date.fromisoformat(params["holdout_start"]) > detected
    new_ap = run.data.metrics["holdout_average_precision"]
    champ_ap = run.data.metrics.get("champion_holdout_average_precision")
    assert champ_ap is not None
    if outcome["action"] == "promote":
        assert new_ap > champ_ap
        assert story["champion"] == challenger["version"]
        assert outcome["previous_version"] == story["first_champion"]
    else:
        assert story["champion"] == story["first_champion"]
    # the monitoring figures are in MLflow under the champion's model version
    mv = registry.client(story["settings"]).get_model_version(
        story["settings"].case.model_name, story["first_champion"]
    )
    assert "monitoring.last_date" in mv.tags
    print(
        json.dumps(
            {
                "triggers": story["triggers"],
                "outcome": outcome["action"],
                "new_ap": new_ap,
                "champion_ap": champ_ap,
            },
            default=str,
        )
    )


def test_no_drift_twin_raises_no_trigger(airflow_db, tmp_path):
    story = play(tmp_path / "twin", drift=False, days=TWIN_DAYS)
    assert story["triggers"] == []
    assert story["retrains"] == []
    assert story["champion"] == story["first_champion"]
    for day, summary in story["summaries"].items():
        assert summary["drift"] is not None, day

    # the decay rule's baseline: none until the champion's first live week after its holdout
    # (INITIAL's holdout ends 05-18: 05-19..05-25) has matured (delay 1: on 05-26), then that week's
    # figures, kept on the model version; the quality window never reaches back into the holdout
    summaries = story["summaries"]
    matured = dt.date(2018, 5, 26)
    for day, summary in summaries.items():
        assert summary["holdout"]["average_precision"] > 0, day  # reported beside, never compared with
        assert summary["quality_window"]["start"] >= "2018-05-19", day
        if day < matured:
            assert summary["baseline"] is None, day
            assert any("matures on 2018-05-26" in n for n in summary["notes"]), summary["notes"]
        else:
            assert summary["baseline"]["window"] == {"start": "2018-05-19", "end": "2018-05-25"}, day
            assert summary["baseline"]["labels_as_of"] == "2018-05-26"
    assert summaries[matured]["quality_window"] == summaries[matured]["baseline"]["window"]
    assert (
        summaries[matured]["baseline"]["average_precision"]
        == summaries[matured]["quality"]["average_precision"]
    )
    assert summaries[TWIN_DAYS[-1]]["baseline"] == summaries[matured]["baseline"]  # read back from the tag
    from jobs.platform import registry

    mv = registry.client(story["settings"]).get_model_version(
        story["settings"].case.model_name, story["first_champion"]
    )
    assert json.loads(mv.tags["monitoring.baseline"]) == summaries[matured]["baseline"]
