"""
### Build features: daily snapshots -> offline feature tables -> Feast online store

**Scheduled on the `lake_transactions` or `lake_labels` asset**: each time ingestion publishes a day
**D** (asset event extra `{"date": D}`), this DAG computes the feature snapshots that day changes and
loads them into the online store. Asset-triggered runs have no logical date: the days come from the
triggering events (several events queued together are processed in one run) through
`jobs.features.days_to_build`: in daily operation just D; in a backfill whose days finished out of
order, also the later snapshots (up to `label_delay_days` + 30 days after D) that were built without D,
so the feature tables never depend on the order ingest runs finished in. For a manual run or a backfill use
*Trigger DAG w/ config* with the `date` param (and optionally `end` for a range).

1. **build** - `jobs.features.build_features(start, end)` (Spark): customer spending (count and
   mean amount over 1/7/30 days) and terminal risk (count and known-fraud share over 1/7/30 days
   shifted back by `label_delay_days`, only labels reported before the snapshot) as of the end of
   each day, written atomically to `features/{customer,terminal}/date=D` with
   `event_timestamp = D+1 00:00 UTC`. Re-running replaces the partitions.
2. **materialize** - `jobs.feature_store.apply()` (idempotent, keeps the materialization watermark)
   then `materialize(...)`: incremental from the registry's watermark, a full load when the
   watermark is missing, a re-write from D up to the watermark for a backfill. Emits the
   `offline_features` asset with extra `{"date": <last day>, "dates": [...]}`.

Runs one at a time (`max_active_runs=1`) so the online store only moves forward.
"""

from __future__ import annotations

from _common import DEFAULT_ARGS, FEATURES, LABELS, SPARK_POOL, START_DATE, TRANSACTIONS
from airflow.sdk import Param, dag, task


def snapshot_days(context) -> list[str]:
    """Days to build: the `date`..`end` params of a manual run, else the triggering events' dates."""
    import datetime as dt

    params = context["params"]
    if params.get("date"):
        start = dt.date.fromisoformat(params["date"])
        end = dt.date.fromisoformat(params.get("end") or params["date"])
        if end < start:
            raise ValueError(f"end: value {end} is before date {start} (rule: date <= end)")
        return [(start + dt.timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]
    from jobs.features import days_to_build

    changed = set()
    for events in (context.get("triggering_asset_events") or {}).values():
        for event in events:
            day = (event.extra or {}).get("date")
            if day:
                changed.add(str(day)[:10])
    if not changed:
        raise ValueError(
            "date: no value (rule: an asset event extra {'date': D} or the `date` param is required)"
        )
    return [d.isoformat() for d in days_to_build(sorted(changed))]


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
    @task(task_id="build", pool=SPARK_POOL)
    def build(**context) -> list[str]:
        from jobs.features import build_features as build_snapshots
        from jobs.logs import get_logger

        days = snapshot_days(context)
        log = get_logger("build_features", ",".join(days))
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
        return days

    @task(task_id="materialize", outlets=[FEATURES])
    def materialize(days: list[str], **context) -> dict:
        from jobs import feature_store

        feature_store.apply()
        done = feature_store.materialize(days[-1], start=days[0])
        context["outlet_events"][FEATURES].extra = {"date": days[-1], "dates": days}
        return {"dates": days, "materialized": done}

    materialize(build())


build_features()
