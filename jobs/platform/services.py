"""The embedded profile's long-running processes: Airflow (API server, scheduler, DAG processor), the Spark
Connect server, the MLflow UI and the scoring API, each started detached with a pid file under
``<home>/run`` and its log under ``<home>/logs``.

``make demo`` starts them and ``make stop`` ends them; the scheduler-path test and benchmark start the
Airflow ones on a temporary home the same way. Children get :func:`jobs.platform.procs.child_env` (no inherited
Feast metrics folder) plus the settings' service environment.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from jobs.platform.config import REPO_ROOT, Settings
from jobs.platform.procs import child_env, port_open

BIN = Path(sys.executable).parent
AIRFLOW = ("airflow-dag-processor", "airflow-scheduler", "airflow-api-server")
ALL = (*AIRFLOW, "mlflow-ui", "scoring-api")


@dataclass(frozen=True)
class Service:
    name: str
    argv: list[str]
    health_url: str | None = None
    port: int | None = None
    port_setting: str | None = None


def airflow_services(settings: Settings) -> list[Service]:
    airflow = str(BIN / "airflow")
    return [
        Service("airflow-dag-processor", [airflow, "dag-processor"]),
        # tasks are forked from the scheduler's workers: start it with the task libraries imported
        Service("airflow-scheduler", [sys.executable, "-m", "jobs.platform.preload", "scheduler"]),
        Service(
            "airflow-api-server",
            [airflow, "api-server", "--port", str(settings.airflow_port), "--host", "127.0.0.1"],
            f"http://127.0.0.1:{settings.airflow_port}/api/v2/monitor/health",
            settings.airflow_port,
            "MLP_AIRFLOW_PORT",
        ),
    ]


def ui_services(settings: Settings) -> list[Service]:
    return [
        Service(
            "mlflow-ui",
            [
                str(BIN / "mlflow"),
                "server",
                "--backend-store-uri",
                settings.mlflow_tracking_uri,
                "--host",
                "127.0.0.1",
                "--port",
                str(settings.mlflow_port),
                "--workers",
                "1",
            ],
            f"http://127.0.0.1:{settings.mlflow_port}/health",
            settings.mlflow_port,
            "MLP_MLFLOW_PORT",
        ),
        Service(
            "scoring-api",
            [
                str(BIN / "uvicorn"),
                "serving.app:create_app",
                "--factory",
                "--host",
                settings.serving_host,
                "--port",
                str(settings.serving_port),
            ],
            f"http://{settings.serving_host}:{settings.serving_port}/healthz",
            settings.serving_port,
            "MLP_SERVING_PORT",
        ),
    ]


class Supervisor:
    """Start, find and stop the platform's processes of one home (pid files, detached sessions)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.run_dir = settings.home / "run"
        self.log_dir = settings.home / "logs"

    def env(self) -> dict[str, str]:
        return child_env(**self.settings.service_env())

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def start(self, service: Service) -> int:
        self.stop(service.name)
        if service.port is not None and port_open("127.0.0.1", service.port):
            raise RuntimeError(
                f"{service.port_setting}: port {service.port} is already in use, so {service.name} cannot "
                "start (another platform home's services? `make stop` there, or choose another port)"
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path(service.name), "ab") as log:
            proc = subprocess.Popen(
                service.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env(),
                cwd=str(REPO_ROOT),
                start_new_session=True,
            )
        (self.run_dir / f"{service.name}.pid").write_text(str(proc.pid))
        return proc.pid

    def pid(self, name: str) -> int | None:
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int((self.run_dir / f"{name}.pid").read_text())
        return None

    def alive(self, name: str) -> bool:
        pid = self.pid(name)
        return pid is not None and _group_alive(pid)

    def stop(self, name: str, timeout: float = 20.0) -> bool:
        """SIGTERM the service's process group, SIGKILL after ``timeout``; True when it was running."""
        pid = self.pid(name)
        (self.run_dir / f"{name}.pid").unlink(missing_ok=True)
        if pid is None or not _group_alive(pid):
            return False
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _group_alive(pid):
                return True
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        return True

    def stop_all(self, names: tuple[str, ...] = ALL) -> None:
        from jobs.platform.spark import stop_server

        for name in names:
            self.stop(name)
        stop_server(self.settings)


def _group_alive(pgid: int) -> bool:
    """Whether any live process is left in the group (a group leader that is our zombie child is reaped,
    and a pid file left by a crash whose pid now belongs to an unrelated process is not a group leader)."""
    import psutil

    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pgid, os.WNOHANG)  # reap our own exited child
    for proc in psutil.process_iter(["pid", "status"]):
        with contextlib.suppress(psutil.Error):
            if os.getpgid(proc.info["pid"]) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
    return False


def wait_http(url: str, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback only
                if resp.status < 500:
                    return True
        except Exception:
            time.sleep(1)
    return False


def start_airflow(
    settings: Settings, timeout: float = 180.0, scheduler: bool = True, wait: bool = True
) -> Supervisor:
    """The Spark Connect server (when configured) and Airflow's DAG processor, API server and (unless
    ``scheduler=False``: start it later with :func:`start_scheduler`) scheduler of ``settings``' home,
    started and health-checked (``wait=False``: started only; :func:`wait_platform` checks them later)."""
    from jobs.platform.spark import ensure_connect_server

    supervisor = Supervisor(settings)
    if settings.spark_connect_url:
        ensure_connect_server(settings, timeout, wait=False)
    for service in airflow_services(settings):
        if scheduler or service.name != "airflow-scheduler":
            supervisor.start(service)
    if wait:
        wait_platform(settings, timeout)
    return supervisor


def wait_platform(settings: Settings, timeout: float = 180.0) -> None:
    """Wait until the Spark Connect server and the Airflow API server started by :func:`start_airflow` answer."""
    from jobs.platform.spark import wait_for_server

    if settings.spark_connect_url:
        wait_for_server(settings, timeout)
    api = airflow_services(settings)[-1]
    if not wait_http(api.health_url, timeout=timeout):
        raise RuntimeError(
            f"the Airflow API server did not answer in {timeout:.0f}s; see {Supervisor(settings).log_path(api.name)}"
        )


def start_scheduler(settings: Settings) -> Supervisor:
    supervisor = Supervisor(settings)
    supervisor.start(next(s for s in airflow_services(settings) if s.name == "airflow-scheduler"))
    return supervisor
