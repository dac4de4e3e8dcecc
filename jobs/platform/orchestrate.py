"""The pipeline through the Airflow scheduler, as a user runs it (``make demo``, the scheduler-path test and
``benchmarks/scheduler``): a backfill of the use case's ingest DAG (``<use case>_ingest``) over the simulated
days, the asset events it emits triggering ``<use case>_build_features``, then manual runs of the model DAGs,
each waited for with a progress callback. Everything goes through the REST API
(:mod:`jobs.platform.airflow_api`); the scheduler runs every task. ``use_case`` defaults to the settings'.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from jobs.platform.airflow_api import AirflowClient, RunState
from jobs.platform.use_case import dag_id

Progress = Callable[[str, int, int], None]


@dataclass
class StageResult:
    dag_id: str
    runs: list[RunState] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def task_seconds(self) -> list[float]:
        return [r.seconds for r in self.runs if r.seconds is not None]


def _quiet(stage: str, done: int, total: int) -> None:
    return None


def _dags(use_case: str | None) -> tuple[str, str]:
    if use_case is None:
        from jobs.platform.config import get_settings

        use_case = get_settings().use_case
    return dag_id(use_case, "ingest"), dag_id(use_case, "build_features")


def queue_backfill(
    client: AirflowClient, start: dt.date, end: dt.date, max_active_runs: int = 2, use_case: str | None = None
) -> None:
    """Unpause the ingest and feature DAGs and create the backfill of the ingest DAG over start..end
    (one run per day). On SQLite, do this before the scheduler starts: Airflow refuses (503) or
    half-creates a backfill while the scheduler writes to the same database."""
    ingest_dag, features_dag = _dags(use_case)
    client.wait_for_dags([ingest_dag, features_dag])
    client.set_paused(features_dag, False)  # an asset-scheduled DAG only queues runs while unpaused
    client.set_paused(ingest_dag, False)
    client.create_backfill(ingest_dag, start, end, max_active_runs=max_active_runs)


def backfill_ingest(
    client: AirflowClient,
    start: dt.date,
    end: dt.date,
    timeout: float = 3600.0,
    progress: Progress = _quiet,
    use_case: str | None = None,
) -> tuple[StageResult, StageResult]:
    """Wait until every run of the backfill of start..end succeeded and the feature DAG has processed
    every asset event those runs emitted."""
    ingest_dag, features_dag = _dags(use_case)
    t0 = time.monotonic()
    total = (end - start).days + 1
    # feature runs that had finished before this wait began belong to an earlier backfill (a re-run)
    earlier = {r.run_id for r in client.runs(features_dag) if r.end_date}

    def ingest_done() -> tuple[int, int, list[RunState]]:
        runs = latest_per_day(client.runs(ingest_dag, run_type="backfill"), start, end)
        return (
            sum(r.state == "success" for r in runs),
            total,
            [r for r in runs if r.state == "failed"],
        )

    client.wait_for(ingest_done, timeout, lambda d, n: progress(ingest_dag, d, n))
    ingest = StageResult(
        ingest_dag,
        latest_per_day(client.runs(ingest_dag, run_type="backfill"), start, end),
        time.monotonic() - t0,
    )

    # Every ingest task registered its asset events when it succeeded, so once the ingest runs are done
    # the feature DAG has settled when no event is still queued for it and none of its runs is active
    # (the scheduler turns queued events into a run in one transaction).
    def features_done() -> tuple[int, int, list[RunState]]:
        queued = client.request("GET", f"/api/v2/dags/{features_dag}/assets/queuedEvents")["total_entries"]
        runs = [r for r in client.runs(features_dag) if r.run_id not in earlier]
        active = [r for r in runs if r.state not in ("success", "failed")]
        finished = len(runs) - len(active)
        settled = runs and not queued and not active
        return finished, finished if settled else finished + 1, [r for r in runs if r.state == "failed"]

    client.wait_for(features_done, timeout, lambda d, n: progress(features_dag, d, n))
    features = StageResult(
        features_dag, [r for r in client.runs(features_dag) if r.run_id not in earlier], time.monotonic() - t0
    )
    return ingest, features


def trigger_and_wait(
    client: AirflowClient,
    dag_id: str,
    logical_date: dt.date,
    conf: dict | None = None,
    timeout: float = 1800.0,
    progress: Progress = _quiet,
) -> StageResult:
    """Unpause ``dag_id`` (a paused DAG's runs stay queued), trigger one run and wait for it."""
    t0 = time.monotonic()
    client.wait_for_dags([dag_id])
    client.set_paused(dag_id, False)
    run = client.trigger(dag_id, logical_date, conf)

    def done() -> tuple[int, int, list[RunState]]:
        state = client.run(dag_id, run.run_id)
        return int(state.state == "success"), 1, [state] if state.state == "failed" else []

    client.wait_for(done, timeout, lambda d, n: progress(dag_id, d, n))
    return StageResult(dag_id, [client.run(dag_id, run.run_id)], time.monotonic() - t0)


def latest_per_day(runs: list[RunState], start: dt.date, end: dt.date) -> list[RunState]:
    """The newest run of each logical date in start..end (a re-run of a failed day replaces it)."""
    latest: dict[str, RunState] = {}
    for run in runs:  # ordered by run_after
        if run.logical_date and start <= dt.date.fromisoformat(run.logical_date[:10]) <= end:
            latest[run.logical_date[:10]] = run
    return [latest[d] for d in sorted(latest)]
