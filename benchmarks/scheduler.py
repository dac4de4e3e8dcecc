"""The scheduler path against the in-process path: the same backfill, timed per task.

(a) **scheduler**: Airflow's scheduler (LocalExecutor) and API server on a temporary home; a backfill of
    ``fraud_ingest`` created through the REST API; ``fraud_build_features`` started by its asset events;
    every task a fresh process talking to the Spark Connect server.
(b) **in-process** (the baseline, what ``dag.test()`` measured): the same job functions called one after the
    other in one process with one warm session of the same Spark Connect server (so the comparison is of the
    orchestration, not of two Spark modes). It runs first, so the server is warm for (a) too.

Per-task seconds come from Airflow's task instances (start -> end, so the scheduler's queueing is not
counted but each task's process start, imports and Spark round trips are) and from timing each call in (b).
The target of the scheduler-path issue is a per-task ratio <= 3x.

    python -m benchmarks.scheduler [--days 7] [--smoke]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from jobs.platform.procs import free_port

FIRST = dt.date(2018, 4, 1)
TARGET_RATIO = 3.0


def scheduler_path(home: Path, days: list[dt.date], sim) -> dict[str, list[float]]:
    from jobs.fraud.simulate import simulate
    from jobs.platform.admin import migrate_airflow
    from jobs.platform.airflow_api import AirflowClient
    from jobs.platform.config import Settings
    from jobs.platform.orchestrate import backfill_ingest, queue_backfill
    from jobs.platform.services import AIRFLOW, Supervisor, start_airflow, start_scheduler
    from jobs.platform.storage import StorageLayout

    os.environ.update(
        {
            "MLP_HOME": str(home),
            "MLP_AIRFLOW_PORT": str(free_port()),
            "FRAUD_SCHEDULE_END_DATE": days[-1].isoformat(),
            "MLP_SENSOR_POKE_SECONDS": "5",
        }
    )
    settings = Settings()
    os.environ.update(settings.service_env())
    migrate_airflow(settings)
    simulate(sim, days[0], days[-1], StorageLayout(settings))
    supervisor = Supervisor(settings)
    try:
        start_airflow(settings, scheduler=False)
        with AirflowClient(settings=settings) as client:
            queue_backfill(client, days[0], days[-1], max_active_runs=settings.spark_pool_slots + 1)
            started = time.monotonic()
            start_scheduler(settings)
            ingest, features = backfill_ingest(client, days[0], days[-1], timeout=3600)
            wall = time.monotonic() - started
            per_task: dict[str, list[float]] = {"wall": [wall]}
            for stage in (ingest, features):
                for run in stage.runs:
                    body = client.request(
                        "GET", f"/api/v2/dags/{stage.dag_id}/dagRuns/{run.run_id}/taskInstances"
                    )
                    for ti in body["task_instances"]:
                        if ti.get("duration") is not None:
                            per_task.setdefault(ti["task_id"], []).append(float(ti["duration"]))
        return per_task
    finally:
        supervisor.stop_all(AIRFLOW)


def in_process_path(home: Path, days: list[dt.date], sim) -> dict[str, list[float]]:
    from jobs.fraud.features import build_features
    from jobs.fraud.simulate import simulate
    from jobs.platform import feature_store
    from jobs.platform.config import Settings
    from jobs.platform.ingest import ingest
    from jobs.platform.spark import get_spark
    from jobs.platform.storage import StorageLayout

    settings = Settings(home=home)
    simulate(sim, days[0], days[-1], StorageLayout(settings))
    started = time.monotonic()
    spark = get_spark("bench-in-process", settings)
    per_task: dict[str, list[float]] = {}

    def timed(name, fn, *args):
        t0 = time.perf_counter()
        fn(*args)
        per_task.setdefault(name, []).append(time.perf_counter() - t0)

    for day in days:
        timed("ingest_transactions", ingest, "transactions", day, settings, spark)
        timed("ingest_labels", ingest, "labels", day, settings, spark)
        timed("build", build_features, day, day, settings, spark)
        timed(
            "materialize",
            lambda d: (
                feature_store.apply(settings),
                feature_store.materialize(d, settings=settings, start=d),
            ),
            day,
        )
    per_task["wall"] = [time.monotonic() - started]
    return per_task


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scheduler", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--smoke", action="store_true", help="2 days of a tiny world: checks it runs")
    args = parser.parse_args(argv)
    from jobs.fraud.simulate import SimulatorConfig

    n_days = 2 if args.smoke else args.days
    sim = SimulatorConfig(n_customers=200, n_terminals=400) if args.smoke else SimulatorConfig()
    days = [FIRST + dt.timedelta(days=i) for i in range(n_days)]
    root = Path(tempfile.mkdtemp(prefix="bench-scheduler-"))
    # this run's own Spark Connect server on a free port, stopped at the end (never a demo's)
    os.environ["MLP_SPARK_CONNECT_URL"] = f"sc://127.0.0.1:{free_port()}"
    from jobs.platform.config import Settings
    from jobs.platform.spark import stop_server

    load_before = os.getloadavg()[0]
    try:
        baseline = in_process_path(root / "in-process", days, sim)
        scheduled = scheduler_path(root / "scheduler", days, sim)
    finally:
        stop_server(Settings(home=root), any_home=True)
        shutil.rmtree(root, ignore_errors=True)
    load_after = os.getloadavg()[0]

    print(f"\n{n_days} days, load average {load_before:.1f} before, {load_after:.1f} after (2 cores)")
    print(f"{'task':<22}{'in-process s':>14}{'scheduler s':>13}{'ratio':>8}")
    ratios = []
    for task in ("ingest_transactions", "ingest_labels", "build", "materialize"):
        a, b = baseline.get(task), scheduled.get(task)
        if not a or not b:
            continue
        if task in ("build", "materialize"):
            # one feature run may build several days (those that landed while it waited for a slot):
            # compare the cost per snapshot day, which is what a day of features costs either way
            ma, mb, unit = sum(a) / n_days, sum(b) / n_days, f"per day ({len(b)} scheduler runs)"
        else:
            ma, mb, unit = statistics.median(a), statistics.median(b), "median per task"
        ratios.append(mb / ma)
        print(f"{task:<22}{ma:>14.2f}{mb:>13.2f}{mb / ma:>7.2f}x   {unit}")
    for task in ("wait_for_landing", "log_counts"):
        if scheduled.get(task):
            print(f"{task:<22}{'-':>14}{statistics.median(scheduled[task]):>13.2f}{'':>8}   (scheduler only)")
    print(
        f"{'whole backfill (wall)':<22}{baseline['wall'][0]:>14.1f}{scheduled['wall'][0]:>13.1f}"
        f"{scheduled['wall'][0] / baseline['wall'][0]:>7.2f}x"
    )
    worst = max(ratios) if ratios else float("nan")
    verdict = "met" if worst <= TARGET_RATIO else "NOT met"
    print(f"\nworst per-task ratio {worst:.2f}x vs target <= {TARGET_RATIO:.0f}x: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
