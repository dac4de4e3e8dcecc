"""The one place that gives a job its SparkSession, and that runs the platform's Spark service.

Two modes, chosen by the settings (``python -m jobs.platform.config`` shows them):

* **Spark Connect** (``spark_connect_url`` set; the default of both profiles): every job is a thin gRPC
  client of one long-lived Spark Connect server, so an Airflow task pays neither a JVM start nor a
  driver warm-up. The embedded profile runs that server on this machine (master ``spark_master``,
  ``local[2]`` by default) and starts it on first use when it is not up yet; the production profile
  points the URL at the cluster's server, whose master is the cluster (``spark://...``).
* **In-process** (``MLP_SPARK_CONNECT_URL=`` empty): a classic driver JVM inside the calling process,
  master ``spark_master``. Useful for debugging with the Spark UI, or on a machine without the server.

``python -m jobs.platform.spark start|stop|status`` manages the embedded server (``make demo`` starts it with the
other services and ``make stop`` ends it). Its log is ``<home>/logs/spark-connect.log``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from jobs.platform.config import REPO_ROOT, Settings, get_settings
from jobs.platform.procs import child_env, port_open

CONNECT_SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
# the Airflow pool every Spark task runs in; its size is ``Settings.spark_pool_slots`` (``jobs.platform.admin``)
AIRFLOW_POOL = "spark"


def spark_confs(settings: Settings) -> dict[str, str]:
    """Spark configuration shared by the in-process session and the Connect server (one definition)."""
    return {
        "spark.driver.memory": settings.spark_driver_memory,
        "spark.sql.shuffle.partitions": str(settings.spark_shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.adaptive.enabled": "true",
        "spark.sql.codegen.wholeStage": str(settings.spark_whole_stage_codegen).lower(),
        "spark.driver.extraJavaOptions": "-Duser.timezone=UTC",
        "spark.executor.extraJavaOptions": "-Duser.timezone=UTC",
        "spark.sql.warehouse.dir": str(settings.home / "spark-warehouse"),
    }


def get_spark(app_name: str = "fraud-platform", settings: Settings | None = None):
    """Return a SparkSession configured from settings. Imported lazily so DAG parsing never loads Spark."""
    from pyspark.sql import SparkSession

    settings = settings or get_settings()
    if settings.spark_connect_url:
        ensure_connect_server(settings)
        return SparkSession.builder.remote(settings.spark_connect_url).appName(app_name).getOrCreate()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name).master(settings.spark_master)
    for key, value in spark_confs(settings).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def default_parallelism(spark, settings: Settings) -> int:
    """Cores Spark can use: the in-process context knows; over Connect the server's master is the setting."""
    if not is_connect(spark):
        return int(spark.sparkContext.defaultParallelism)
    master = settings.spark_master
    if master.startswith("local["):
        inner = master[len("local[") : -1].split(",")[0]
        return os.cpu_count() or 1 if inner == "*" else max(1, int(inner))
    return int(settings.spark_cluster_cores)


def is_connect(spark) -> bool:
    return type(spark).__module__.startswith("pyspark.sql.connect")


# --- the embedded Spark Connect server ---------------------------------------------------------------


def _endpoint(settings: Settings) -> tuple[str, int]:
    url = urlparse(settings.spark_connect_url or "")
    if url.scheme != "sc" or not url.hostname:
        raise ValueError(
            f"spark_connect_url: {settings.spark_connect_url!r} is not a Spark Connect URL "
            "(rule: sc://host:port)"
        )
    return url.hostname, url.port or 15002


def _is_local(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1")


def _paths(settings: Settings) -> dict[str, Path]:
    run, logs = settings.home / "run", settings.home / "logs"
    return {
        "pid": run / "spark-connect.pid",
        "lock": run / "spark-connect.lock",
        "log": logs / "spark-connect.log",
        "meta": run / "spark-connect.json",
    }


def server_command(settings: Settings) -> list[str]:
    """``spark-submit`` of the Connect server class (what pyspark's ``start-connect-server.sh`` runs),
    in the foreground so the caller supervises it."""
    import pyspark

    spark_home = Path(pyspark.__file__).resolve().parent
    host, port = _endpoint(settings)
    confs = {
        **spark_confs(settings),
        "spark.connect.grpc.binding.address": host,
        "spark.connect.grpc.binding.port": str(port),
        # results larger than this travel in chunks; keep the defaults otherwise
        "spark.connect.grpc.maxInboundMessageSize": str(256 * 1024 * 1024),
    }
    argv = [
        str(spark_home / "bin" / "spark-submit"),
        "--class",
        CONNECT_SERVER_CLASS,
        "--name",
        "platform-spark-connect",
        "--master",
        settings.spark_master,
    ]
    for key, value in confs.items():
        argv += ["--conf", f"{key}={value}"]
    jar = next((spark_home / "jars").glob("spark-connect_*.jar"), None)
    if jar is None:
        raise RuntimeError(f"no spark-connect jar in {spark_home / 'jars'} (rule: pyspark >= 4 ships it)")
    return [*argv, str(jar)]


def server_env(settings: Settings) -> dict[str, str]:
    """The server's Python workers (mapInPandas, UDFs) run this interpreter with the project importable."""
    env = child_env()
    env.update(
        PYSPARK_PYTHON=sys.executable,
        PYSPARK_DRIVER_PYTHON=sys.executable,
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p),
        SPARK_LOG_DIR=str(settings.home / "logs"),
        SPARK_CONF_DIR=str(write_log_config(settings)),
    )
    return env


LOG4J2 = """# written by jobs.platform.spark for the embedded Connect server (level: Settings.spark_log_level)
rootLogger.level = {level}
rootLogger.appenderRef.stdout.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{{yy/MM/dd HH:mm:ss}} %p %c{{1}}: %m%n%ex
# the server's start-up lines (its port, its version) stay in the log
logger.connect.name = org.apache.spark.sql.connect.service.SparkConnectServer
logger.connect.level = info
"""


def write_log_config(settings: Settings) -> Path:
    """A Spark conf folder with only ``log4j2.properties``: at INFO the server logs every request and
    every compiled class (160 k lines and a few % of its CPU for a 50-day demo)."""
    folder = _paths(settings)["pid"].parent / "spark-conf"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "log4j2.properties").write_text(LOG4J2.format(level=settings.spark_log_level.lower()))
    return folder


def ensure_connect_server(settings: Settings, timeout: float = 180.0, wait: bool = True) -> None:
    """Make sure the Connect server of ``settings`` answers; start the embedded one if it is not up.

    Only a loopback URL is started here, and only when ``spark_connect_autostart`` is on; several tasks
    asking at once start one server (a file lock serialises them). A remote URL that does not answer is a
    clear error naming the URL.
    """
    host, port = _endpoint(settings)
    if port_open(host, port):
        return
    if not (_is_local(host) and settings.spark_connect_autostart):
        raise RuntimeError(
            f"spark_connect_url: no Spark Connect server answers at {settings.spark_connect_url} "
            "(start it with `python -m jobs.platform.spark start`, or set MLP_SPARK_CONNECT_URL= for an "
            "in-process session)"
        )
    paths = _paths(settings)
    paths["lock"].parent.mkdir(parents=True, exist_ok=True)
    with open(paths["lock"], "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if port_open(host, port):
            return
        if not _starting(settings):
            start_server(settings)
        if wait:  # else the caller waits later (wait_for_server), doing other work meanwhile
            wait_for_server(settings, timeout)


def start_server(settings: Settings) -> int:
    """Launch the embedded Connect server in its own session (it outlives the caller); return its pid."""
    paths = _paths(settings)
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    argv = server_command(settings)
    with open(paths["log"], "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=server_env(settings),
            cwd=str(settings.home),
            start_new_session=True,
        )
    paths["pid"].write_text(str(proc.pid))
    paths["meta"].write_text(
        json.dumps({"pid": proc.pid, "url": settings.spark_connect_url, "master": settings.spark_master})
    )
    print(
        f"started Spark Connect server (pid {proc.pid}, master {settings.spark_master}) at "
        f"{settings.spark_connect_url}; log {paths['log']}",
        file=sys.stderr,
        flush=True,
    )
    return proc.pid


def wait_for_server(settings: Settings, timeout: float = 180.0) -> None:
    host, port = _endpoint(settings)
    deadline = time.monotonic() + timeout
    pid = _pid(settings)
    while not port_open(host, port):
        if pid is not None and not _alive(pid):
            raise RuntimeError(
                f"the Spark Connect server exited during start-up; see {_paths(settings)['log']}"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"no Spark Connect server at {settings.spark_connect_url} after {timeout:.0f}s; "
                f"see {_paths(settings)['log']}"
            )
        time.sleep(0.25)


def _pid(settings: Settings) -> int | None:
    with contextlib.suppress(FileNotFoundError, ValueError):
        return int(_paths(settings)["pid"].read_text())
    return None


def _starting(settings: Settings) -> bool:
    """A server of this home was launched and is still coming up (its pid is a live Connect server:
    a pid file left by a dead server may name a pid since reused by another process)."""
    pid = _pid(settings)
    if pid is None or not _alive(pid):
        return False
    try:
        return CONNECT_SERVER_CLASS.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # no /proc (macOS): trust the pid
        return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie child of this process is not alive
        status = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        return status != "Z"
    return True


def _listener_pid(settings: Settings) -> int | None:
    """The Spark Connect server process listening on this URL's loopback port (started from any home)."""
    import psutil

    host, port = _endpoint(settings)
    if not _is_local(host):
        return None
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            with contextlib.suppress(psutil.Error):
                if CONNECT_SERVER_CLASS in " ".join(psutil.Process(conn.pid).cmdline()):
                    return conn.pid
    return None


def stop_server(settings: Settings, timeout: float = 30.0, any_home: bool = False) -> bool:
    """Stop the embedded server started from this home; with ``any_home``, also one found listening on
    this URL's loopback port (a test session's own port, whichever home's job started it). True when one
    was running."""
    pid = _pid(settings)
    _paths(settings)["pid"].unlink(missing_ok=True)
    if (pid is None or not _alive(pid)) and any_home and settings.spark_connect_url:
        pid = _listener_pid(settings)
    if pid is None or not _alive(pid):
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGTERM)
        else:
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return True


def health(settings: Settings) -> dict[str, object]:
    """Round trip through the server: a tiny query, timed."""
    started = time.monotonic()
    spark = get_spark("health", settings)
    rows = spark.range(10).count()
    return {
        "url": settings.spark_connect_url,
        "master": settings.spark_master,
        "ok": rows == 10,
        "seconds": round(time.monotonic() - started, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.platform.spark", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("command", choices=["start", "stop", "status", "serve"])
    args = parser.parse_args(argv)
    settings = get_settings()
    if args.command in ("start", "status") and not settings.spark_connect_url:
        print("spark_connect_url is empty: jobs run Spark in-process; there is no server to manage")
        return 0
    if args.command == "start":
        ensure_connect_server(settings)
        print(json.dumps(health(settings)))
        return 0
    if args.command == "serve":  # foreground, for a process supervisor
        argv = server_command(settings)
        os.execve(argv[0], argv, server_env(settings))
    if args.command == "stop":
        print("stopped" if stop_server(settings) else "not running")
        return 0
    host, port = _endpoint(settings)
    if not port_open(host, port):
        print(json.dumps({"url": settings.spark_connect_url, "ok": False}))
        return 1
    print(json.dumps(health(settings)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
