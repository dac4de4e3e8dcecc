"""Start an Airflow component with the platform's task libraries already imported.

On Linux the LocalExecutor forks its workers from the scheduler and every task process from a worker, so a
task inherits what the scheduler imported. Without this, each task process pays the imports of what it uses
again (Great Expectations and Feast take 3-10 s each to import on 2 cores), which dominates the short daily
tasks. ``python -m jobs.platform.preload scheduler`` is ``airflow scheduler`` after importing
``Settings.airflow_preload_modules``: third-party libraries only (the platform's own modules are imported fresh
by each task, so a code change needs no scheduler restart), imports only: no connection, thread or JVM is
created here, and the thread count after preloading is printed (forking a process with threads is unsafe).
"""

from __future__ import annotations

import importlib
import sys
import time


def preload(modules: list[str]) -> dict[str, float]:
    """Import ``modules``; return the seconds each took (a module that fails to import is an error)."""
    seconds = {}
    for name in modules:
        t0 = time.perf_counter()
        importlib.import_module(name)
        seconds[name] = round(time.perf_counter() - t0, 2)
    return seconds


def main(argv: list[str] | None = None) -> int:
    import threading

    from jobs.platform.config import get_settings

    args = list(sys.argv[1:] if argv is None else argv)
    modules = get_settings().airflow_preload_modules
    get_settings.cache_clear()  # tasks forked from here read their settings themselves
    taken = preload(modules)
    threads = threading.active_count()
    print(
        f"preloaded for the tasks this process forks: {taken}; threads: {threads}",
        file=sys.stderr,
        flush=True,
    )
    if threads != 1:
        raise SystemExit(f"preloading started {threads - 1} thread(s): forking tasks from here is unsafe")
    from airflow.__main__ import main as airflow_main

    sys.argv = ["airflow", *args]
    return airflow_main() or 0


if __name__ == "__main__":
    raise SystemExit(main())
