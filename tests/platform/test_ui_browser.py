"""The Airflow web UI, used the way a person would: real browser, real local stack.

The fixture builds a small platform (25 simulated days of lake data, Spark feature snapshots, the Feast
repo applied), then starts ``airflow api-server``, ``scheduler`` and ``dag-processor`` on free ports with
SQLite and the SimpleAuthManager (``settings.service_env()``). Playwright drives Debian's Chromium
(``make browser`` installs it; Playwright's own browser download is never used): sign in, see every
project DAG and no import error, open ``train_model``, fill the trigger form, watch the run succeed.
Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from jobs.platform.config import REPO_ROOT, Settings

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = REPO_ROOT / "test-artifacts"
FIRST, LAST = dt.date(2018, 4, 1), dt.date(2018, 4, 25)
# train 04-02..04-08; holdout (default) starts label_delay+1 days later: 04-16..04-18; labels to 04-25
FORM = {
    "reason": "browser test: trigger from the UI form",
    "train_start": "2018-04-02",
    "train_end": "2018-04-08",
    "holdout_days": "3",
    "max_depth": "3",
    "n_estimators": "30",
}
pytestmark = [pytest.mark.airflow, pytest.mark.timeout(1500)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_lake(settings: Settings) -> None:
    """Lake partitions as ingestion publishes them (data contract columns/types), from the simulator."""
    from jobs.fraud.simulate import SimulatorConfig, write_lake
    from jobs.platform.storage import StorageLayout

    write_lake(
        SimulatorConfig(n_customers=200, n_terminals=400, seed=11), FIRST, LAST, StorageLayout(settings)
    )


def _run(cmd: list[str], env: dict[str, str], timeout: int = 600) -> None:
    result = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (
        f"{' '.join(cmd)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A local Airflow (api-server + scheduler + dag-processor) over a small prepared platform."""
    if not CHROMIUM.exists():
        pytest.fail("Debian's Chromium is missing at /usr/bin/chromium: run `make browser`", pytrace=False)
    home = tmp_path_factory.mktemp("ui-home")
    port = _free_port()
    settings = Settings(home=home, profile="local", airflow_port=port)
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "MLP_", "FRAUD_", "MLFLOW_"))
    }
    env.update(settings.service_env())
    env.update(
        {
            "PYSPARK_PYTHON": sys.executable,
            # tasks report to this api-server; all three processes share the token secret
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            # only runs a person triggers: no scheduled catch-up competing for the 2 cores
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(_free_port()),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(_free_port()),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        }
    )
    t0 = time.monotonic()
    _write_lake(settings)
    # the feature snapshots (Spark) and the Feast registry build while Airflow's database migrates
    data_log = open(home / "data.log", "wb")  # noqa: SIM115 - closed below
    data = subprocess.Popen(
        [
            "bash",
            "-c",
            f"{sys.executable} -m jobs.fraud.build_features --start {FIRST} --end {LAST}"
            f" && {sys.executable} -m jobs.platform.feature_store apply",
        ],
        env=env,
        cwd=REPO_ROOT,
        stdout=data_log,
        stderr=subprocess.STDOUT,
    )
    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    airflow = str(Path(sys.executable).parent / "airflow")
    _run([airflow, "db", "migrate"], env)
    t_migrate = time.monotonic() - t0
    data.wait(timeout=600)
    data_log.close()
    print(f"ui-stack setup: migrate {t_migrate:.0f}s, lake+features+feast {time.monotonic() - t0:.0f}s")
    assert data.returncode == 0, f"features/Feast setup failed:\n{(home / 'data.log').read_text()[-4000:]}"
    procs: dict[str, subprocess.Popen] = {}
    logs = {}
    for name, cmd in {
        "api-server": [airflow, "api-server", "--host", "127.0.0.1", "--port", str(port)],
        "scheduler": [airflow, "scheduler"],
        "dag-processor": [airflow, "dag-processor"],
    }.items():
        logs[name] = open(home / f"{name}.log", "wb")  # noqa: SIM115 - closed at teardown
        procs[name] = subprocess.Popen(
            cmd, env=env, cwd=REPO_ROOT, stdout=logs[name], stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{base}/api/v2/monitor/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            dead = [n for n, p in procs.items() if p.poll() is not None]
            assert not dead and time.monotonic() < deadline, (
                f"Airflow did not come up ({dead or 'timeout'}); logs in {home}:\n"
                + (home / f"{(dead or ['api-server'])[0]}.log").read_text()[-3000:]
            )
            time.sleep(1)
        print(f"ui-stack setup: airflow up after {time.monotonic() - t0:.0f}s")
        passwords = json.loads(Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).read_text())
        yield {"base": base, "password": passwords["admin"], "home": home, "settings": settings}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, 15)
        for proc in procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
        for log in logs.values():
            log.close()


@pytest.fixture(scope="module")
def api(stack) -> httpx.Client:
    """The REST API with a token from the same SimpleAuthManager login (to cross-check what the UI shows)."""
    token = httpx.post(
        f"{stack['base']}/auth/token", json={"username": "admin", "password": stack["password"]}, timeout=10
    )
    assert token.status_code in (200, 201), token.text
    with httpx.Client(
        base_url=stack["base"],
        headers={"Authorization": f"Bearer {token.json()['access_token']}"},
        timeout=10,
    ) as client:
        yield client


@pytest.fixture(scope="module")
def page(stack):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(90_000)  # a loaded 2-core CI machine renders slowly
        yield page
        browser.close()


def _project_dag_ids() -> set[str]:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO_ROOT / "dags"))
    assert not bag.import_errors, bag.import_errors
    return set(bag.dag_ids)


def _wait_for_dags(api: httpx.Client, expected: set[str], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while True:
        seen = {d["dag_id"] for d in api.get("/api/v2/dags", params={"limit": 100}).json()["dags"]}
        if expected <= seen or time.monotonic() > deadline:
            assert expected <= seen, f"dag-processor did not register {sorted(expected - seen)}"
            return
        time.sleep(2)


def test_login_dag_list_trigger_train_model_from_the_form(stack, api, page) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    base = stack["base"]
    expected = _project_dag_ids()
    assert {"fraud_train_model", "ranking_train_model"} <= expected
    _wait_for_dags(api, expected)

    # sign in through the SimpleAuthManager login page
    page.goto(f"{base}/")
    page.wait_for_url("**/auth/login**")  # the UI sends an anonymous visitor to the login page
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(stack["password"])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/auth/login" not in url)

    # the DAG list: every project DAG, no import errors
    page.goto(f"{base}/dags")
    for dag_id in sorted(expected):
        page.get_by_role("link", name=dag_id, exact=True).first.wait_for()
    page.get_by_text(f"{len(expected)} Dags").wait_for()
    assert page.get_by_text("Import Error", exact=False).count() == 0
    assert api.get("/api/v2/importErrors").json()["total_entries"] == 0
    page.screenshot(path=str(ARTIFACTS / "airflow-dag-list.png"), full_page=True)

    # open train_model, trigger it from the form with typed params
    page.get_by_role("link", name="fraud_train_model", exact=True).first.click()
    page.wait_for_url(f"{base}/dags/fraud_train_model**")
    page.get_by_text("Latest Dag Version").wait_for()
    dialog = page.get_by_role("dialog")
    for attempt in range(5):  # a click before React has wired the button does nothing: click again
        page.get_by_role("button", name="Trigger Dag").click()
        try:
            dialog.get_by_text("Run Parameters").wait_for(timeout=15_000)
            break
        except PlaywrightTimeout:
            assert attempt < 4, "the trigger form did not open"
    for name, value in FORM.items():
        field = dialog.locator(f'input[name="element_{name}"]')
        field.fill(value)
        field.blur()
    run_id = f"ui_browser_{int(time.time())}"
    dialog.get_by_role("button", name="Advanced Options").click()
    dialog.locator('input[name="dagRunId"]').fill(run_id)
    page.screenshot(path=str(ARTIFACTS / "airflow-trigger-form.png"), full_page=True)
    dialog.get_by_role("button", name="Trigger", exact=True).click()
    dialog.wait_for(state="hidden")
    page.get_by_text("Dag Run Triggered").first.wait_for()  # the UI renders the toast in two toasters
    page.wait_for_url(f"**/dags/fraud_train_model/runs/{run_id}**")

    # the run exists with the form's values as its conf, then finishes
    run = api.get(f"/api/v2/dags/fraud_train_model/dagRuns/{run_id}")
    assert run.status_code == 200, f"the UI did not create run {run_id}: {run.text}"
    assert (run.json()["triggered_by"], run.json()["triggering_user_name"]) == ("ui", "admin")
    conf = run.json()["conf"]
    assert conf["train_start"] == "2018-04-02" and conf["train_end"] == "2018-04-08"
    assert (
        int(conf["holdout_days"]) == 3
        and int(conf["n_estimators"]) == 30
        and conf["reason"] == FORM["reason"]
    )
    deadline = time.monotonic() + 600
    state = run.json()["state"]
    while state not in ("success", "failed") and time.monotonic() < deadline:
        time.sleep(5)
        state = api.get(f"/api/v2/dags/fraud_train_model/dagRuns/{run_id}").json()["state"]
    tis = api.get(f"/api/v2/dags/fraud_train_model/dagRuns/{run_id}/taskInstances").json()["task_instances"]
    summary = {t["task_id"]: t["state"] for t in tis}
    assert state == "success", (
        f"fraud_train_model run {run_id} ended {state}: {summary}; logs under {stack['home']}"
    )
    assert summary["train"] == "success" and summary["evaluate_gate"] == "success"

    # and the UI shows it: the run page with its state
    page.reload()
    page.get_by_role("cell", name="train", exact=True).wait_for()
    page.get_by_text("success", exact=False).first.wait_for()
    page.screenshot(path=str(ARTIFACTS / "airflow-train-model-run.png"), full_page=True)

    # the run really trained and registered a model in this platform's MLflow registry
    from mlflow import MlflowClient

    settings = stack["settings"]
    client = MlflowClient(
        tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri
    )
    versions = client.search_model_versions(f"name='{settings.case.model_name}'")
    assert versions, "no model version registered by the UI-triggered run"
