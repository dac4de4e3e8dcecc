"""
### Build features: daily snapshots -> offline feature tables -> Feast online store

**Scheduled on the `lake_transactions` or `lake_labels` asset**: each time ingestion publishes a day
(asset event extra `{"date": D}`) this DAG wakes up, builds every **stale** snapshot and loads it
into the online store. What to build comes from the lake, not from the events
(`jobs.fraud.features.stale_days`): a snapshot day is stale when its tables are missing or the lake
partitions it reads (`label_delay_days` + 30 days up to D) differ by content from those it was built
from (`features/_inputs/date=D/inputs.json`, written after its tables). In daily operation that is
just D; in a backfill whose days finished out of order it also includes the later snapshots built
without D. So the feature tables never depend on the order ingest runs finished in, nor on how the
scheduler grouped the events: Airflow 3.3 merges an event that arrives while an earlier event for the
same asset is still queued (the DAG is at `max_active_runs`) into that queue entry, and the run it
starts does not consume the newer event (apache/airflow#56050). `new_data_since_build` then sees the
stale day and `catch_up` triggers the next run. For a manual rebuild of given days use
*Trigger DAG w/ config* with the `date` param (and optionally `end`).

1. **build** - `jobs.fraud.features.build_features(start, end)` (Spark): customer spending (count and
   mean amount over 1/7/30 days) and terminal risk (count and known-fraud share over 1/7/30 days
   shifted back by `label_delay_days`, only labels reported before the snapshot) as of the end of
   each day, written atomically to `features/{customer,terminal}/date=D` with
   `event_timestamp = D+1 00:00 UTC`. Re-running replaces the partitions.
2. **materialize** - `jobs.platform.feature_store.apply()` (idempotent, keeps the materialization watermark)
   then `materialize(...)`: incremental from the registry's watermark, a full load when the
   watermark is missing, a re-write from D up to the watermark for a backfill. Emits the
   `offline_features` asset with extra `{"date": <last day>, "dates": [...]}`. Skipped when
   nothing was stale (a wake-up for a day an earlier run already built).
3. **new_data_since_build** / **catch_up** - if a lake partition was written while this run built
   and left a stale day, trigger this DAG again.

Runs one at a time (`max_active_runs=1`) so the online store only moves forward.
"""

from __future__ import annotations

from _common import DEFAULT_ARGS, FEATURES, LABELS, REBUILD_PRIORITY, SPARK_POOL, START_DATE, TRANSACTIONS
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, dag, task


def snapshot_days(context) -> list[str]:
    """Days to build: the `date`..`end` params of a manual run, else every stale snapshot day."""
    import datetime as dt

    params = context["params"]
    if params.get("date"):
        start = dt.date.fromisoformat(params["date"])
        end = dt.date.fromisoformat(params.get("end") or params["date"])
        if end < start:
            raise ValueError(f"end: value {end} is before date {start} (rule: date <= end)")
        return [(start + dt.timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]
    from jobs.fraud.features import stale_days

    return [d.isoformat() for d in stale_days()]


def event_days(context) -> list[str]:
    """The days named by the asset events that woke this run (logged; the work comes from the lake)."""
    days = set()
    for events in (context.get("triggering_asset_events") or {}).values():
        for event in events:
            if (event.extra or {}).get("date"):
                days.add(str(event.extra["date"])[:10])
    return sorted(days)


@dag(
    dag_id="build_features",
    schedule=(TRANSACTIONS | LABELS),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    tags=["fraud", "features"],
    params={
        "date": Param(
            None,
            type=["null", "string"],
            format="date",
            description="manual runs: first snapshot day (YYYY-MM-DD); empty = the triggering assets' dates",
        ),
        "end": Param(
            None,
            type=["null", "string"],
            format="date",
            description="manual runs: last snapshot day of a range (default: `date`)",
        ),
    },
)
def build_features():
    @task(task_id="build", pool=SPARK_POOL, **REBUILD_PRIORITY)
    def build(**context) -> dict:
        import time

        from jobs.fraud.features import build_features as build_snapshots
        from jobs.platform.logs import get_logger

        started = time.time()
        days = snapshot_days(context)
        log = get_logger("build_features", ",".join(days) or "-")
        log.info("days to build", days=days, events=event_days(context))
        # contiguous runs of days are built in one Spark job each
        runs: list[list[str]] = []
        import datetime as dt

        for day in days:
            if runs and dt.date.fromisoformat(day) - dt.date.fromisoformat(runs[-1][-1]) == dt.timedelta(1):
                runs[-1].append(day)
            else:
                runs.append([day])
        for run in runs:
            result = build_snapshots(run[0], run[-1])
            log.info("built", **result.as_dict())
        return {"days": days, "started": started}

    @task(task_id="materialize", outlets=[FEATURES])
    def materialize(built: dict, **context) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from jobs.platform import feature_store

        days = built["days"]
        if not days:  # woken by an event whose day an earlier run already built
            raise AirflowSkipException("no stale snapshot: nothing to materialize")
        feature_store.apply()
        done = feature_store.materialize(days[-1], start=days[0])
        context["outlet_events"][FEATURES].extra = {"date": days[-1], "dates": days}
        return {"dates": days, "materialized": done}

    @task.short_circuit(task_id="new_data_since_build", trigger_rule="none_failed")
    def new_data_since_build(built: dict) -> bool:
        """A lake partition written while this run built (its asset event may have been merged into the
        event that started this run, see the DAG doc) gets a run of its own."""
        from jobs.fraud.features import stale_days

        return bool(stale_days(changed_after=built["started"]))

    built = build()
    catch_up = TriggerDagRunOperator(task_id="catch_up", trigger_dag_id="build_features", conf={}, retries=0)
    materialize(built) >> new_data_since_build(built) >> catch_up


build_features()
