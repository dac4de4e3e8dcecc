"""The main job (``make demo``): generate data, run every DAG through Airflow, leave the UIs running.

Steps, all on the embedded default profile (SQLite, local files, Spark local mode):

1. migrate the Airflow metadata database;
2. simulate ``--days`` days of card transactions (and their late chargebacks) into the landing zone;
3. run the DAGs through Airflow itself (``dag.test`` per logical date: parsed from ``dags/`` by a
   DagBag and recorded in the metadata database, so every run is visible in the web UI):
   ingest_transactions (each day) -> build_features (the whole range) -> train_model -> batch_predict
   (last day) -> monitor_and_retrain (last day);
4. start the Airflow API server/UI (with scheduler and DAG processor), the MLflow UI and the scoring
   API in the background and print their URLs. ``make stop`` ends them.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from jobs.config import get_settings  # noqa: E402

SETTINGS = get_settings()
os.environ.update(SETTINGS.service_env())
sys.path.insert(0, str(REPO / "dags"))
BIN = Path(sys.executable).parent


def banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def run_dir() -> Path:
    path = SETTINGS.home / "run"
    path.mkdir(parents=True, exist_ok=True)
    return path


def migrate_airflow() -> None:
    SETTINGS.airflow_home.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [str(BIN / "airflow"), "db", "migrate"], check=True, stdout=subprocess.DEVNULL, env=os.environ
    )


class DagRunner:
    """Runs DAGs in-process through ``dag.test`` so the Spark session is reused across runs."""

    def __init__(self) -> None:
        from airflow.dag_processing.dagbag import DagBag

        self.bag = DagBag(dag_folder=str(REPO / "dags"))
        if self.bag.import_errors:
            raise SystemExit(f"DAG import errors: {json.dumps(self.bag.import_errors, indent=2)}")
        self.results: list[dict[str, object]] = []

    def has(self, dag_id: str) -> bool:
        return dag_id in self.bag.dags

    def run(self, dag_id: str, logical_date: dt.date | dt.datetime, conf: dict | None = None) -> str:
        import pendulum

        dag = self.bag.dags[dag_id]
        when = pendulum.instance(
            logical_date
            if isinstance(logical_date, dt.datetime)
            else dt.datetime.combine(logical_date, dt.time()),
            tz="UTC",
        )
        started = time.monotonic()
        dr = dag.test(logical_date=when, run_conf=conf)
        state = str(getattr(dr.state, "value", dr.state))
        seconds = round(time.monotonic() - started, 1)
        self.results.append(
            {"dag": dag_id, "date": when.to_date_string(), "state": state, "seconds": seconds}
        )
        print(f"  {dag_id:<22} {when.to_date_string()}  {state:<8} {seconds:>6.1f}s", flush=True)
        if state != "success":
            raise SystemExit(
                f"{dag_id} failed for {when.to_date_string()}: see the task logs in the Airflow UI"
            )
        return state


def ingest_counts(days: list[dt.date]) -> None:
    import pyarrow.parquet as pq

    from jobs.storage import StorageLayout

    layout = StorageLayout(SETTINGS)
    print(f"\n  {'date':<12}{'published':>11}{'quarantined':>13}{'labels':>8}")
    total_pub = total_q = 0
    for day in days:
        pub = _rows(pq, layout.path("transactions", day))
        quar = _rows(pq, layout.path("quarantine_transactions", day))
        labels = _rows(pq, layout.path("labels", day))
        total_pub, total_q = total_pub + pub, total_q + quar
        print(f"  {day.isoformat():<12}{pub:>11}{quar:>13}{labels:>8}")
    print(f"  {'total':<12}{total_pub:>11}{total_q:>13}")


def _rows(pq, path: Path) -> int:
    if not path.exists():
        return 0
    return sum(pq.ParquetFile(f).metadata.num_rows for f in sorted(path.glob("*.parquet")))


def feature_registry() -> None:
    subprocess.run([sys.executable, "-m", "jobs.feature_store", "list"], check=False, env=os.environ)


def registry_state() -> None:
    subprocess.run([sys.executable, "-m", "jobs.registry", "history"], check=False, env=os.environ)


# --- background services ----------------------------------------------------------------
def _spawn(name: str, argv: list[str], extra_env: dict[str, str] | None = None) -> None:
    stop_one(name)
    with open(run_dir() / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(extra_env or {})},
            cwd=str(REPO),
            start_new_session=True,
        )
    (run_dir() / f"{name}.pid").write_text(str(proc.pid))


def stop_one(name: str) -> None:
    pid_file = run_dir() / f"{name}.pid"
    if not pid_file.exists():
        return
    with contextlib.suppress(ProcessLookupError, ValueError, PermissionError):
        os.killpg(int(pid_file.read_text()), signal.SIGTERM)
    pid_file.unlink(missing_ok=True)


def wait_http(url: str, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - localhost only
                if resp.status < 500:
                    return True
        except Exception:
            time.sleep(1)
    return False


SERVICES = ("airflow-api-server", "airflow-scheduler", "airflow-dag-processor", "mlflow-ui", "scoring-api")


def start_services() -> dict[str, str]:
    airflow = str(BIN / "airflow")
    _spawn("airflow-dag-processor", [airflow, "dag-processor"])
    _spawn("airflow-scheduler", [airflow, "scheduler"])
    _spawn("airflow-api-server", [airflow, "api-server", "--port", str(SETTINGS.airflow_port)])
    backend = SETTINGS.mlflow_tracking_uri
    _spawn(
        "mlflow-ui",
        [
            str(BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            backend,
            "--host",
            "127.0.0.1",
            "--port",
            str(SETTINGS.mlflow_port),
            "--workers",
            "1",
        ],
    )
    urls = {
        "Airflow web UI": f"http://127.0.0.1:{SETTINGS.airflow_port}",
        "MLflow UI": f"http://127.0.0.1:{SETTINGS.mlflow_port}",
    }
    if (REPO / "serving" / "app.py").exists():
        _spawn(
            "scoring-api",
            [
                str(BIN / "uvicorn"),
                "serving.app:create_app",
                "--factory",
                "--host",
                SETTINGS.serving_host,
                "--port",
                str(SETTINGS.serving_port),
            ],
        )
        urls["Scoring API"] = f"http://{SETTINGS.serving_host}:{SETTINGS.serving_port}/docs"
    checks = {
        "Airflow web UI": f"{urls['Airflow web UI']}/api/v2/monitor/health",
        "MLflow UI": f"{urls['MLflow UI']}/health",
        "Scoring API": f"http://{SETTINGS.serving_host}:{SETTINGS.serving_port}/healthz",
    }
    for name in urls:
        ok = wait_http(checks[name])
        print(f"  {name:<16} {urls[name]:<40} {'up' if ok else 'NOT RESPONDING (see .platform/run/*.log)'}")
    return urls


def print_login() -> None:
    passwords = SETTINGS.airflow_home / "passwords.json"
    if passwords.exists():
        for user, password in json.loads(passwords.read_text()).items():
            print(f"  Airflow login: {user} / {password}   (generated for this machine: {passwords})")
    print("  The DAGs start paused: unpause one in the UI to let the scheduler run it on its schedule.")


def stop_services() -> None:
    for name in SERVICES:
        stop_one(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/demo.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=50, help="days to simulate (>= 30)")
    parser.add_argument("--fresh", action="store_true", help="wipe .platform first")
    parser.add_argument("--no-services", action="store_true", help="do not leave the UIs running")
    parser.add_argument(
        "command",
        nargs="?",
        choices=["run", "services", "stop"],
        default="run",
        help="run: everything; services: only (re)start the UIs and the API; stop: end them",
    )
    args = parser.parse_args(argv)
    if args.command == "stop":
        stop_services()
        print("stopped")
        return 0
    if args.command == "services":
        start_services()
        print_login()
        return 0
    if args.days < 30:
        parser.error("--days must be at least 30 (features look back 30 days)")

    stop_services()
    if args.fresh and SETTINGS.home.exists():
        shutil.rmtree(SETTINGS.home)
    t0 = time.monotonic()
    banner(f"profile={SETTINGS.profile} home={SETTINGS.home}")
    migrate_airflow()

    from jobs.simulate import SimulatorConfig, simulate
    from jobs.storage import StorageLayout, as_date

    start = as_date(SETTINGS.start_date)
    days = [start + dt.timedelta(days=i) for i in range(args.days)]
    banner(f"simulating {args.days} days from {start}")
    counts = simulate(
        SimulatorConfig(label_delay_days=SETTINGS.label_delay_days),
        days[0],
        days[-1],
        StorageLayout(SETTINGS),
    )
    print(
        f"  {int(counts['transactions'].sum())} transactions, {int(counts['frauds'].sum())} frauds, "
        f"{int(counts['labels_reported'].sum())} chargebacks reported"
    )

    runner = DagRunner()
    banner("ingest_transactions: one Airflow run per day")
    for day in days:
        runner.run("ingest_transactions", day)
    ingest_counts(days)

    if runner.has("build_features"):
        banner("build_features: one Airflow run over the generated days (Spark windows + Feast materialize)")
        runner.run("build_features", days[-1], {"date": days[0].isoformat(), "end": days[-1].isoformat()})
        feature_registry()

    if runner.has("train_model"):
        banner("train_model")
        runner.run("train_model", days[-1], {"reason": "demo: first model", "as_of": days[-1].isoformat()})
        registry_state()

    if runner.has("batch_predict"):
        banner("batch_predict for the last day")
        runner.run("batch_predict", days[-1], {"date": days[-1].isoformat()})
        from jobs.storage import StorageLayout

        print(f"  predictions for {days[-1]}: {StorageLayout(SETTINGS).uri('predictions', days[-1])}")

    if runner.has("monitor_and_retrain"):
        banner("monitor_and_retrain for the last day")
        runner.run("monitor_and_retrain", days[-1])

    print(f"\n  {len(runner.results)} DAG runs succeeded in {time.monotonic() - t0:.0f}s")
    if not args.no_services:
        banner("services (left running; `make stop` ends them)")
        start_services()
        print_login()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
