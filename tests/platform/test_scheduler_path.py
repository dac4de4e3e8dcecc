"""The pipeline the way users run it: the Airflow scheduler (LocalExecutor) on a temporary home, driven only
through the REST API — a backfill of ``fraud_ingest`` whose asset events trigger ``fraud_build_features`` —
with every Spark task talking to the Spark Connect service. The lake and the feature tables must equal those
of the in-process path (the same job functions called directly) for the same days.

The scheduler is started from an environment that carries a Feast metrics folder that no longer exists,
exactly what a scheduler spawned by ``make demo`` (which imports Feast) used to inherit: ``materialize`` then
failed on every try with ``FileNotFoundError`` on ``gauge_liveall_*.db``.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.fraud.simulate import SimulatorConfig, simulate
from jobs.platform.config import Settings
from jobs.platform.procs import free_port
from jobs.platform.storage import StorageLayout
from tests.support.features import assert_same_feature_tables

pytestmark = [pytest.mark.airflow, pytest.mark.spark, pytest.mark.slow]

FIRST, LAST = dt.date(2018, 4, 1), dt.date(2018, 4, 8)  # 8 days through the scheduler
SIM = SimulatorConfig(n_customers=300, n_terminals=600, dup_rate=0.01)


def _settings(home: Path, **kw) -> Settings:
    return Settings(home=home, case={"feast_project": f"sched_{home.name[-6:].replace('-', '_')}"}, **kw)


@pytest.fixture(scope="module")
def scheduler_home(tmp_path_factory, settings):
    """A home with its own Airflow (SQLite) and lake; the session's Spark Connect server; free ports."""
    from jobs.platform.admin import migrate_airflow
    from jobs.platform.services import Supervisor, start_airflow

    home = tmp_path_factory.mktemp("scheduler-path")
    env = {
        "MLP_HOME": str(home),
        "MLP_AIRFLOW_PORT": str(free_port()),
        "FRAUD_SCHEDULE_END_DATE": LAST.isoformat(),
        "MLP_SENSOR_POKE_SECONDS": "5",
    }
    saved = {k: os.environ.get(k) for k in [*env, "PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR"]}
    os.environ.update(env)
    # a metrics folder that is gone, inherited from a parent that has exited (see jobs/platform/procs.py): the
    # scheduler and its tasks must drop it before Feast is imported
    gone = str(home / "metrics_gone")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.environ["PROMETHEUS_MULTIPROCESS_DIR"] = gone
    sched = Settings()
    sched_env = {**sched.service_env(), "AIRFLOW__CORE__UNIT_TEST_MODE": "False"}
    migrate_airflow(sched)
    simulate(SIM, FIRST, LAST, StorageLayout(sched))
    supervisor = Supervisor(sched)
    os.environ.update(sched_env)
    try:
        start_airflow(sched, scheduler=False)
        yield sched, supervisor
    finally:
        for name in ("airflow-api-server", "airflow-scheduler", "airflow-dag-processor"):
            supervisor.stop(name)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        from jobs.platform.config import get_settings

        get_settings.cache_clear()
        for key, value in settings.service_env().items():  # back to the session's Airflow
            os.environ[key] = value


@pytest.fixture(scope="module")
def backfilled(scheduler_home):
    from jobs.platform.airflow_api import AirflowClient
    from jobs.platform.orchestrate import backfill_ingest, queue_backfill
    from jobs.platform.services import start_scheduler

    sched, supervisor = scheduler_home
    with AirflowClient(settings=sched) as client:
        try:
            queue_backfill(client, FIRST, LAST, max_active_runs=2)
            start_scheduler(sched)
            ingest, features = backfill_ingest(client, FIRST, LAST, timeout=1500)
        except Exception as exc:  # the scheduler's own log says why a run never started
            log = supervisor.log_path("airflow-scheduler").read_text()[-3000:]
            raise AssertionError(f"{exc}\n--- scheduler log tail ---\n{log}") from exc
        sensor = client.request(
            "GET", f"/api/v2/dags/fraud_ingest/dagRuns/{ingest.runs[0].run_id}/taskInstances"
        )
    return sched, ingest, features, sensor


def test_backfill_through_the_scheduler_succeeds(backfilled):
    sched, ingest, features, task_instances = backfilled
    assert len(ingest.runs) == (LAST - FIRST).days + 1
    assert {r.state for r in ingest.runs} == {"success"}
    assert {r.run_type for r in ingest.runs} == {"backfill"}
    # real durations, not the logical date: the scheduler records when the run started
    assert all(0 < r.seconds < 900 for r in ingest.runs)
    assert features.runs and {r.state for r in features.runs} == {"success"}
    # started by the ingest asset events, or by the DAG's own catch_up task (operator_triggered)
    assert "asset_triggered" in {r.run_type for r in features.runs}
    assert {r.run_type for r in features.runs} <= {"asset_triggered", "operator_triggered"}
    pools = {t["task_id"]: t["pool"] for t in task_instances["task_instances"]}
    assert pools["ingest_transactions"] == pools["ingest_labels"] == "spark"


def test_lake_and_features_equal_the_in_process_path(backfilled, tmp_path, spark):
    """The same days ingested and built in-process (one range build) give the same partitions: the lake
    byte for byte, the feature tables row for row, whatever order the scheduler ran the days in."""
    from jobs.fraud.features import build_features
    from jobs.platform.ingest import ingest

    sched = backfilled[0]
    local = _settings(tmp_path / "in-process")
    simulate(SIM, FIRST, LAST, StorageLayout(local))
    for day in [FIRST + dt.timedelta(days=i) for i in range((LAST - FIRST).days + 1)]:
        ingest("transactions", day, local, spark)
        ingest("labels", day, local, spark)
    build_features(FIRST, LAST, local, spark)

    a, b = StorageLayout(sched), StorageLayout(local)
    for dataset in ("transactions", "labels", "quarantine_transactions", "quarantine_labels"):
        for day in b.partitions(dataset):
            left = sorted(a.path(dataset, day).glob("*.parquet"))
            right = sorted(b.path(dataset, day).glob("*.parquet"))
            assert [p.name for p in left] == [p.name for p in right], (dataset, day)
            for x, y in zip(left, right, strict=True):
                assert x.read_bytes() == y.read_bytes(), f"{dataset} {day}: {x.name} differs"
    assert_same_feature_tables(b, a)
    # every snapshot is up to date with the lake, from the same lake partitions as the in-process build
    from jobs.fraud.features import INPUTS_FILE, INPUTS_VIEW, stale_days

    assert stale_days(sched) == [] == stale_days(local)
    for day in b.partitions("features", INPUTS_VIEW):
        records = [(lay.path("features", day, INPUTS_VIEW) / INPUTS_FILE).read_text() for lay in (a, b)]
        assert records[0] == records[1], day


def test_a_stale_inherited_metrics_folder_is_dropped(tmp_path):
    """A child that inherits a Feast metrics folder that is gone drops it before Feast is imported, so
    Feast's gauges (what materialize writes) work; a user's own, existing folder is kept."""
    code = (
        "import os, jobs, feast.metrics;"
        "from prometheus_client import Gauge; Gauge('g', 'g', multiprocess_mode='liveall').set(1);"
        "print(os.environ['PROMETHEUS_MULTIPROC_DIR'])"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "feast_metrics_gone")}
    env["PROMETHEUS_MULTIPROCESS_DIR"] = env["PROMETHEUS_MULTIPROC_DIR"]
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "feast_metrics_gone" not in out.stdout

    from jobs.platform.procs import child_env

    mine = tmp_path / "my-metrics"
    mine.mkdir()
    assert "PROMETHEUS_MULTIPROC_DIR" not in child_env({"PROMETHEUS_MULTIPROC_DIR": "/tmp/feast_metrics_x1"})
    assert child_env({"PROMETHEUS_MULTIPROC_DIR": str(mine)})["PROMETHEUS_MULTIPROC_DIR"] == str(mine)


def test_ui_shows_the_backfill_and_the_asset_triggered_runs(backfilled):
    """What a person sees after the backfill: the ingest DAG's runs (backfill, real durations) and the
    feature DAG's asset-triggered runs, screenshotted to test-artifacts/."""
    from playwright.sync_api import sync_playwright

    from jobs.platform.airflow_api import admin_password
    from jobs.platform.config import REPO_ROOT

    chromium = Path("/usr/bin/chromium")
    assert chromium.exists(), "Debian's Chromium is missing at /usr/bin/chromium: run `make browser`"
    sched = backfilled[0]
    base = f"http://127.0.0.1:{sched.airflow_port}"
    artifacts = REPO_ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), args=args)
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        page.set_default_timeout(90_000)
        page.goto(f"{base}/")
        page.wait_for_url("**/auth/login**")
        page.get_by_label("Username").fill("admin")
        page.get_by_label("Password").fill(admin_password(sched))
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(lambda url: "/auth/login" not in url)
        page.goto(f"{base}/dags/fraud_ingest/runs")
        page.get_by_text("backfill__2018-04-02", exact=False).first.wait_for()
        page.screenshot(path=str(artifacts / "scheduler-backfill-runs.png"), full_page=True)
        page.goto(f"{base}/dags/fraud_build_features/runs")
        page.get_by_text("asset_triggered", exact=False).first.wait_for()
        page.screenshot(path=str(artifacts / "scheduler-asset-triggered-runs.png"), full_page=True)
        browser.close()
