"""Environment hygiene for the processes this platform starts (schedulers, servers, workers).

Feast's ``feast.metrics`` module, on import, creates a temporary folder and exports it as
``PROMETHEUS_MULTIPROC_DIR`` / ``PROMETHEUS_MULTIPROCESS_DIR``; the folder is deleted when that process
exits. A long-lived child started from such a process (``make demo`` starting the Airflow scheduler)
inherits the variables, and every task it runs later finds a folder that no longer exists: Feast's
``materialize`` then dies with ``FileNotFoundError`` on ``gauge_liveall_*.db``. So children get an
environment without Feast's own folder, and a process that inherits a folder that is gone drops it.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Mapping, MutableMapping

METRICS_DIR_VARS = ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR")
FEAST_DIR_PREFIX = "feast_metrics_"


def _feast_owned(path: str) -> bool:
    return os.path.basename(os.path.normpath(path)).startswith(FEAST_DIR_PREFIX)


def child_env(base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """``base`` (default: this process's environment) for a child process: without the metrics folder
    Feast created for this process (a user's own ``PROMETHEUS_MULTIPROC_DIR`` is kept), plus ``extra``."""
    env = dict(os.environ if base is None else base)
    for var in METRICS_DIR_VARS:
        if var in env and _feast_owned(env[var]):
            del env[var]
    env.update(extra)
    return env


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def drop_missing_metrics_dirs(env: MutableMapping[str, str] | None = None) -> list[str]:
    """Remove inherited metrics-folder variables whose folder does not exist (returns their names)."""
    env = os.environ if env is None else env
    gone = [var for var in METRICS_DIR_VARS if var in env and not os.path.isdir(env[var])]
    for var in gone:
        del env[var]
    return gone
