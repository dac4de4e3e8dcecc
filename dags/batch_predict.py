"""
### Batch prediction: score day D with the champion, write (and publish) `predictions/date=D`

Daily (`DAILY` data-interval timetable: the run with logical date **D** scores day D once D has
ended), backfillable (`airflow backfill create --dag-id batch_predict --from-date ... --to-date ...`,
or *Trigger DAG* with a logical date in the UI).

**Only runs once features exist for the date.** The mechanism is a sensor, not an asset schedule: an
asset-triggered DAG cannot be backfilled by date, while a timetable DAG can. `wait_for_features`
(reschedule mode, it frees its worker slot between pokes) checks the exact inputs of day D
(`jobs.platform.batch_predict.missing_inputs`): the lake partition `transactions/date=D` and the feature
snapshots the point-in-time join uses for D's rows (`features/{customer,terminal}/date=D-1`, written
by `build_features`). It fails after `FEATURE_WAIT` if they never appear.

1. **wait_for_features** — sensor described above.
2. **score** — `jobs.platform.batch_predict.run(D, alias)`: PIT features from the Feast offline store through
   the feature service `fraud_v2`, scoring inside Spark (`mapInPandas`, model broadcast as raw native
   bytes), atomic write of `predictions/date=D` (transaction_id, score, decision, model_version,
   scored_at); in the production profile the partition is published to S3 with a manifest written
   last (`jobs.platform.publish`). Re-running a date replaces its partition. Emits the `batch_predictions`
   asset with extra `{"date": D, "model_version": ..., "rows": ...}`.

Params: `alias` scores with the `challenger` instead (e.g. to compare offline before a promotion);
`date` re-scores a given day from a manual trigger. Where the output is: the task's XCom (`path`, and
`published` in production) and the `predictions_written` log line.
"""

from __future__ import annotations

import datetime as dt

from _common import (
    DAILY,
    DEFAULT_ARGS,
    END_DATE,
    PREDICTIONS,
    SPARK_POOL,
    START_DATE,
    fail_without_retry,
    nothing_missing,
    processing_date,
)
from airflow.sdk import Param, dag, task

FEATURE_WAIT = dt.timedelta(hours=6)


def _day(context) -> str:
    """The day to score: the ``date`` param when given (manual re-scoring), else the data interval's."""
    return context["params"].get("date") or processing_date(context)


@dag(
    dag_id="batch_predict",
    schedule=DAILY,
    start_date=START_DATE,
    end_date=END_DATE,
    catchup=False,
    max_active_runs=4,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    tags=["fraud", "serving", "batch"],
    params={
        "date": Param(
            None,
            type=["null", "string"],
            format="date",
            description="score this day (YYYY-MM-DD) instead of the run's data interval (manual re-scoring)",
        ),
        "alias": Param(
            "champion",
            type="string",
            enum=["champion", "challenger"],
            description="registry alias of the model that scores the day",
        ),
    },
)
def batch_predict():
    @task.sensor(task_id="wait_for_features", poke_interval=300, timeout=FEATURE_WAIT, mode="reschedule")
    def wait_for_features(**context) -> bool:
        from jobs.platform.batch_predict import missing_inputs

        date = _day(context)
        return nothing_missing("batch_predict", date, missing_inputs(date))

    @task(task_id="score", outlets=[PREDICTIONS], pool=SPARK_POOL)
    def score(**context) -> dict:
        from jobs.platform.batch_predict import BatchPredictError, run

        with fail_without_retry(BatchPredictError):  # e.g. a feature missing, rows lost in the join
            summary = run(_day(context), alias=context["params"]["alias"])
        context["outlet_events"][PREDICTIONS].extra = {
            "date": summary["date"],
            "model_version": summary["model_version"],
            "rows": summary["rows"],
            "uri": summary.get("published", summary["path"]),
        }
        return summary

    wait_for_features() >> score()


batch_predict()
