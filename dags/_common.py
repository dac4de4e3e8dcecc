"""Shared wiring for every DAG: default task policy, the timetables, pools and priorities, sensor arguments.

Kept import-light (no Spark, pandas or MLflow at module level) so that DAG files parse fast.
"""

from __future__ import annotations

import contextlib
import datetime as dt

import pendulum
from airflow.timetables.interval import CronDataIntervalTimetable

from jobs.platform.config import Settings, get_settings
from jobs.platform.spark import AIRFLOW_POOL


def use_case_settings(name: str) -> Settings:
    """The process's settings with the section of use case ``name``: what its DAGs' tasks run with."""
    return get_settings().with_use_case(name)


def start_date(name: str) -> pendulum.DateTime:
    """The first logical date of use case ``name``'s daily DAGs (its ``start_date`` setting)."""
    return pendulum.parse(use_case_settings(name).case.start_date, tz="UTC")


def end_date(name: str) -> pendulum.DateTime | None:
    """The last day its time-scheduled DAGs run for (None: open-ended); `make demo` bounds it by the
    simulated days (``<USE CASE>_SCHEDULE_END_DATE``)."""
    end = use_case_settings(name).case.schedule_end_date
    return pendulum.datetime(end.year, end.month, end.day, tz="UTC") if end else None


# A run with logical date D processes day D and starts once D has ended (data-interval semantics).
DAILY = CronDataIntervalTimetable("0 0 * * *", timezone="UTC")
WEEKLY = CronDataIntervalTimetable("0 3 * * 1", timezone="UTC")

DEFAULT_ARGS = {
    "owner": "ml-platform",
    "retries": 2,
    "retry_delay": dt.timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": dt.timedelta(minutes=10),
    "execution_timeout": dt.timedelta(hours=1),
}

SPARK_POOL = AIRFLOW_POOL  # tasks that run Spark jobs; bounded by Settings.spark_pool_slots
# Who gets a free `spark` slot first when tasks queue for it (a backfill): ingestion, then feature
# rebuilds. A rebuild that waits builds every day that landed meanwhile in one Spark job (its cost
# barely grows with the days), instead of one rebuild per landed day. Daily operation never queues.
INGEST_PRIORITY = {"priority_weight": 10, "weight_rule": "absolute"}
REBUILD_PRIORITY = {"priority_weight": 1, "weight_rule": "absolute"}


def nothing_missing(job: str, day: str, missing: list[str]) -> bool:
    """A data sensor's poke: log what is still missing (one line), True once nothing is."""
    if missing:
        from jobs.platform.logs import get_logger

        get_logger(job, day).info("waiting_for_inputs", missing=missing)
    return not missing


def data_wait() -> dict:
    """Arguments of a sensor that waits for a day's data: reschedule mode (the worker slot is free between
    pokes), poke interval and timeout from the settings."""
    settings = get_settings()
    return {
        "mode": "reschedule",
        "poke_interval": settings.sensor_poke_seconds,
        "timeout": dt.timedelta(seconds=settings.landing_wait_seconds),
        "retries": 0,
    }


def processing_date(context) -> str:
    """The day a daily run processes (YYYY-MM-DD): its logical date D.

    Scheduled and backfill runs of DAILY have logical date D = data_interval_start (interval [D, D+1)); a manual
    run or ``dag.test(logical_date=D)`` gets the inferred interval [D-1, D) but still logical date D, so the
    logical date is the one value that means "day D" for every run type. Asset-triggered runs have no logical
    date: they fall back to the data interval start.
    """
    day = context.get("logical_date") or context.get("data_interval_start")
    return day.strftime("%Y-%m-%d")


@contextlib.contextmanager
def fail_without_retry(*errors: type[BaseException]):
    """Contract and data errors fail the task at once: ``ValueError`` (the jobs' "field: value ...;
    rule: ..." errors) and the given types become ``AirflowFailException`` (no retry: the same input
    fails the same way). Anything else - a lost connection, a busy database - is transient and keeps
    the retries of ``DEFAULT_ARGS``."""
    from airflow.sdk.exceptions import AirflowFailException

    try:
        yield
    except (ValueError, *errors) as exc:
        raise AirflowFailException(str(exc)) from exc
