"""The main job (``make demo``): generate data, run every DAG through the Airflow scheduler, leave the UIs up.

Steps, all on the embedded default profile (SQLite, local files, a local Spark Connect server):

1. migrate the Airflow metadata database and create the ``spark`` pool;
2. start the platform's services: the Spark Connect server every Spark task talks to, and Airflow's DAG
   processor and API server (the scheduler (LocalExecutor) starts once the backfill is queued, step 4);
3. meanwhile, simulate ``--days`` days of card transactions (and their late chargebacks) into the landing zone;
4. drive Airflow through its REST API, as a user would: a **backfill** of ``fraud_ingest`` over the
   simulated days, whose asset events trigger ``fraud_build_features``; then runs of ``fraud_train_model``,
   ``fraud_batch_predict`` and ``fraud_monitor_and_retrain`` for the last day. The scheduler runs every task; the
   terminal shows progress bars, the task logs are in the Airflow UI and under ``<home>/airflow/logs``;
   The **ranking** use case runs the same way on its own simulated shop (``--ranking-days`` days of a
   demo-sized world, ``RANKING_WORLD_*`` below, a user's own values win): ``ranking_ingest`` backfilled
   alongside fraud's, then ``ranking_train_model`` (ranker, retrieval index and pre-ranker),
   ``ranking_batch_predict`` (the top 10 of every active user) and ``ranking_monitor_and_retrain``;
5. start the MLflow UI and the scoring API and print every URL and the Airflow login. ``make stop`` ends
   all of them.

The time-scheduled DAGs get ``end_date`` = the last simulated day (``<USE CASE>_SCHEDULE_END_DATE``), so
the unpaused DAGs do not start runs for today's date, for which the simulated world has no data.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def demo_state_path(home: Path) -> Path:
    return home / "run" / "demo.json"


# the ranking demo's shop: a fifth of the default world's users and catalogue, a fifth of its traffic
DEMO_RANKING_WORLD = {
    "RANKING_WORLD_N_USERS": "4000",
    "RANKING_WORLD_N_ITEMS": "10000",
    "RANKING_WORLD_NEW_ITEMS_PER_DAY": "50",
    "RANKING_WORLD_REQUESTS_PER_DAY": "2000",
}


def load_settings(end_date: str | None = None, remember: bool = True, ranking_end: str | None = None):
    """Settings for this demo home; the simulated ranges, once known, bound the DAG schedules."""
    from jobs.platform.config import get_settings

    home = get_settings().home
    state = demo_state_path(home)
    saved = json.loads(state.read_text()) if state.exists() else {}
    for variable, key, value in (
        ("FRAUD_SCHEDULE_END_DATE", "end", end_date),
        ("RANKING_SCHEDULE_END_DATE", "ranking_end", ranking_end),
    ):
        value = value or os.environ.get(variable) or saved.get(key)  # a user's own end date wins
        if value:
            os.environ[variable] = value
            saved[key] = value
    if remember and state.exists():  # remembered for `scripts/demo.py services`
        state.write_text(json.dumps(saved))
    for variable, value in DEMO_RANKING_WORLD.items():
        os.environ.setdefault(variable, value)
    get_settings.cache_clear()
    settings = get_settings()
    os.environ.update(settings.service_env())
    return settings


class Bar:
    """One progress bar per stage (tqdm), fed by the orchestration's progress callback."""

    def __init__(self) -> None:
        self.bars: dict[str, object] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        from tqdm import tqdm

        bar = self.bars.get(stage)
        if bar is None:
            bar = self.bars[stage] = tqdm(
                total=total, desc=f"  {stage:<20}", unit="run", ncols=90, leave=True, file=sys.stdout
            )
        bar.total = max(total, done)
        bar.n = done
        bar.refresh()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


def _rows(pq, path: Path) -> int:
    if not path.exists():
        return 0
    return sum(pq.ParquetFile(f).metadata.num_rows for f in sorted(path.glob("*.parquet")))


def ingest_counts(settings, days: list[dt.date]) -> None:
    import pyarrow.parquet as pq

    from jobs.platform.storage import StorageLayout

    layout = StorageLayout(settings)
    published = sum(_rows(pq, layout.path("transactions", d)) for d in days)
    quarantined = sum(_rows(pq, layout.path("quarantine_transactions", d)) for d in days)
    labels = sum(_rows(pq, layout.path("labels", d)) for d in days)
    print(
        f"  lake: {published} transactions published, {quarantined} quarantined, {labels} chargebacks "
        f"over {len(days)} days ({layout.dataset_root('transactions')})"
    )


def stage_line(result) -> None:
    times = result.task_seconds
    median = f"median run {statistics.median(times):.1f}s" if times else ""
    print(f"  {result.dag_id:<27} {len(result.runs):>3} run(s) succeeded in {result.seconds:6.1f}s  {median}")


def log_to_file(settings) -> Path:
    """The demo's own structured log lines go to a file; the terminal keeps the summaries."""
    import logging

    from jobs.platform.logs import JsonFormatter

    path = settings.home / "logs" / "demo.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("jobs")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return path


def run_cli(settings, *argv: str) -> None:
    from jobs.platform.procs import child_env

    env = child_env(**{**settings.service_env(), "MLP_USE_CASE": settings.use_case})
    subprocess.run([sys.executable, *argv], check=False, env=env)


def ranking_figures(settings, client, result) -> None:
    """The champion ranker's holdout figures and what the day's recommendations look like."""
    from jobs.platform import registry

    version = registry.champion_version(settings)
    if version is None:
        return
    mv = registry.client(settings).get_model_version(settings.case.model_name, version)
    metrics = registry.client(settings).get_run(mv.run_id).data.metrics
    print(
        f"  ranker v{version}: holdout NDCG@10 {metrics.get('holdout_ndcg_at_10', float('nan')):.4f} "
        f"(logged order {metrics.get('holdout_logged_ndcg_at_10', float('nan')):.4f}), "
        f"MRR {metrics.get('holdout_mrr', float('nan')):.4f}; "
        f"retrieval index over {int(metrics.get('companion_indexed_items', 0))} items"
    )
    run = result.runs[-1]
    summary = client.request(
        "GET", f"/api/v2/dags/{run.dag_id}/dagRuns/{run.run_id}/taskInstances/score/xcomEntries/return_value"
    ).get("value")
    if isinstance(summary, str):
        summary = json.loads(summary)
    if isinstance(summary, dict):
        print(
            f"  {summary['users']} users, {summary['rows']} recommendations: coverage {summary['coverage']:.3f}, "
            f"diversity {summary['diversity']:.3f}, freshness {summary['freshness']:.3f}"
        )


def start_platform(settings, scheduler: bool = True, wait: bool = True) -> None:
    from jobs.platform.services import start_airflow

    try:
        start_airflow(settings, scheduler=scheduler, wait=wait)
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from exc


def start_uis(settings) -> dict[str, str]:
    from jobs.platform.services import Supervisor, airflow_services, ui_services, wait_http

    supervisor = Supervisor(settings)
    if not all(supervisor.alive(s.name) for s in airflow_services(settings)):
        start_platform(settings)
    for service in ui_services(settings):
        supervisor.start(service)
    urls = {
        "Airflow web UI": (f"http://127.0.0.1:{settings.airflow_port}", airflow_services(settings)[-1]),
        "MLflow UI": (f"http://127.0.0.1:{settings.mlflow_port}", ui_services(settings)[0]),
        "Scoring API": (
            f"http://{settings.serving_host}:{settings.serving_port}/docs",
            ui_services(settings)[1],
        ),
    }
    for name, (url, service) in urls.items():
        ok = wait_http(service.health_url)
        print(
            f"  {name:<16} {url:<40} {'up' if ok else f'NOT RESPONDING (see {supervisor.log_path(service.name)})'}"
        )
    if settings.spark_connect_url:
        print(f"  {'Spark Connect':<16} {settings.spark_connect_url:<40} up (master {settings.spark_master})")
    return {k: v[0] for k, v in urls.items()}


def print_login(settings) -> None:
    passwords = settings.airflow_home / "passwords.json"
    if passwords.exists():
        for user, password in json.loads(passwords.read_text()).items():
            print(f"  Airflow login: {user} / {password}   (generated for this machine: {passwords})")
    print(
        f"  Logs: Airflow tasks under {settings.airflow_home / 'logs'}, services under {settings.home / 'logs'}"
    )


def stop_all(settings) -> None:
    from jobs.platform.services import Supervisor

    Supervisor(settings).stop_all()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/demo.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=50, help="days to simulate (>= 30)")
    parser.add_argument(
        "--ranking-days", type=int, default=21, help="days of the ranking shop to simulate (0: fraud only)"
    )
    parser.add_argument("--fresh", action="store_true", help="wipe the platform home first")
    parser.add_argument("--no-services", action="store_true", help="stop every service at the end")
    parser.add_argument(
        "command",
        nargs="?",
        choices=["run", "services", "stop"],
        default="run",
        help="run: everything; services: only (re)start the services; stop: end them",
    )
    args = parser.parse_args(argv)
    if args.command == "stop":
        stop_all(load_settings(remember=False))
        print("stopped")
        return 0
    if args.command == "services":
        settings = load_settings()
        start_uis(settings)
        print_login(settings)
        return 0
    if args.days < 30:
        parser.error("--days must be at least 30 (features look back 30 days)")

    from jobs.platform.config import get_settings
    from jobs.platform.storage import as_date

    if args.ranking_days and args.ranking_days < 14:
        parser.error("--ranking-days must be 0 or at least 14 (a training window, its gap and a holdout)")
    start = as_date(get_settings().case.start_date)
    days = [start + dt.timedelta(days=i) for i in range(args.days)]
    ranking_start = as_date(get_settings().with_use_case("ranking").case.start_date)
    ranking_days = [ranking_start + dt.timedelta(days=i) for i in range(args.ranking_days)]
    ranking_end = ranking_days[-1].isoformat() if ranking_days else None
    settings = load_settings(days[-1].isoformat(), ranking_end=ranking_end)
    stop_all(settings)
    if args.fresh and settings.home.exists():
        shutil.rmtree(settings.home)
    demo_state_path(settings.home).parent.mkdir(parents=True, exist_ok=True)
    demo_state_path(settings.home).write_text(
        json.dumps({"start": str(days[0]), "end": str(days[-1]), "ranking_end": ranking_end})
    )
    t0 = time.monotonic()
    banner(f"profile={settings.profile} home={settings.home}  (log: {log_to_file(settings)})")

    from jobs.fraud.simulate import SimulatorConfig, simulate
    from jobs.platform.admin import migrate_airflow
    from jobs.platform.storage import StorageLayout

    migrate_airflow(settings)
    banner("starting the Spark Connect server and Airflow (DAG processor, API server), simulating meanwhile")
    start_platform(settings, scheduler=False, wait=False)  # they need no data: they start while we simulate
    banner(f"simulating {args.days} days from {start}")
    counts = simulate(
        SimulatorConfig(label_delay_days=settings.case.label_delay_days),
        days[0],
        days[-1],
        StorageLayout(settings),
    )
    print(
        f"  {int(counts['transactions'].sum())} transactions, {int(counts['frauds'].sum())} frauds, "
        f"{int(counts['labels_reported'].sum())} chargebacks reported"
    )
    ranking = settings.with_use_case("ranking")
    if ranking_days:
        from jobs.ranking.simulate import simulate as simulate_shop

        world = ranking.case.world
        banner(
            f"simulating {len(ranking_days)} days of the ranking shop from {ranking_days[0]} "
            f"({world.n_users} users, {world.n_items} items, ~{world.requests_per_day} requests a day)"
        )
        shop = simulate_shop(ranking_days[0], ranking_days[-1], ranking)
        print(
            f"  {int(shop['impressions'].sum())} impressions, {int(shop['clicks'].sum())} clicks, "
            f"{int(shop['purchases'].sum())} purchases"
        )

    from jobs.platform.airflow_api import AirflowApiError, AirflowClient
    from jobs.platform.orchestrate import backfill_ingest, queue_backfill, trigger_and_wait
    from jobs.platform.services import start_scheduler, wait_platform
    from jobs.platform.use_case import dag_id, get_use_case

    try:
        wait_platform(settings)
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from exc
    results = []
    bar = Bar()
    try:
        with AirflowClient(settings=settings) as client:
            plans = [(settings, days)] + ([(ranking, ranking_days)] if ranking_days else [])
            for case_settings, case_days in plans:
                uc = case_settings.use_case
                banner(
                    f"backfill {uc}_ingest {case_days[0]}..{case_days[-1]}; asset events trigger {uc}_build_features"
                )
                slots = settings.spark_pool_slots + 1
                queue_backfill(client, case_days[0], case_days[-1], max_active_runs=slots, use_case=uc)
            start_scheduler(settings)
            for case_settings, case_days in plans:
                uc = case_settings.use_case
                ingest, features = backfill_ingest(
                    client, case_days[0], case_days[-1], progress=bar, use_case=uc
                )
                bar.close()
                results += [ingest, features]
                stage_line(ingest)
                stage_line(features)
                if uc == "fraud":
                    ingest_counts(settings, days)
            for case_settings, case_days in plans:
                uc, last = case_settings.use_case, case_days[-1]
                for kind, conf in (
                    ("train_model", {"reason": "demo: first model", "as_of": last.isoformat()}),
                    ("batch_predict", {"date": last.isoformat()}),
                    ("monitor_and_retrain", None),
                ):
                    banner(f"{dag_id(uc, kind)} for {last}")
                    result = trigger_and_wait(client, dag_id(uc, kind), last, conf, progress=bar)
                    bar.close()
                    results.append(result)
                    stage_line(result)
                    if kind == "train_model":
                        run_cli(case_settings, "-m", "jobs.platform.registry", "history")
                    if kind == "batch_predict":
                        output = get_use_case(case_settings).batch_output
                        layout = StorageLayout(case_settings)
                        print(f"  {output} for {last}: {layout.uri(output, last)}")
                        if uc == "ranking":
                            try:
                                ranking_figures(case_settings, client, result)
                            except (AirflowApiError, KeyError, ValueError) as exc:  # figures only
                                print(f"  (ranking figures unavailable: {exc})")
    except AirflowApiError as exc:
        bar.close()
        raise SystemExit(f"demo failed: {exc}") from exc

    n_runs = sum(len(r.runs) for r in results)
    print(f"\n  {n_runs} DAG runs succeeded through the scheduler in {time.monotonic() - t0:.0f}s")
    if args.no_services:
        stop_all(settings)
        return 0
    banner("services (left running; `make stop` ends them)")
    start_uis(settings)
    print_login(settings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
