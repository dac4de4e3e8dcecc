"""Test harness shared by every test module: pytest hooks and fixtures only (plain helpers are in
``tests/support/``).

Before anything imports Airflow or reads settings, ``pytest_configure`` points the platform at a
fresh temporary home (``MLP_HOME``) so tests never touch a developer's ``.platform`` folder, and
exports the Airflow/MLflow environment the settings object derives from it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# the shared helpers assert too: rewrite their asserts like a test module's (before anything imports them)
pytest.register_assert_rewrite("tests.support")

from jobs.platform.procs import free_port  # noqa: E402
from tests.support.paths import DAGS  # noqa: E402

_HOME: Path | None = None


def _hypothesis_profiles() -> None:
    """Budgets of the property-based tests: ``ci`` (default, ``make test``: derandomized, so a run is
    reproducible, no example database) and ``fuzz`` (``make fuzz``: random, 20x the examples, failures kept
    in ``.hypothesis/`` and replayed first). Choose with ``--hypothesis-profile``."""
    from hypothesis import settings

    settings.register_profile("ci", max_examples=300, derandomize=True, database=None, deadline=None)
    settings.register_profile("fuzz", max_examples=6000, deadline=None)
    settings.load_profile("ci")


_hypothesis_profiles()  # before collection, so --hypothesis-profile (applied at configure) can override it


def pytest_configure(config: pytest.Config) -> None:
    global _HOME
    _HOME = Path(tempfile.mkdtemp(prefix="fraud-tests-"))
    os.environ["MLP_HOME"] = str(_HOME)
    os.environ.setdefault("MLP_PROFILE", "local")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # this session's own Spark Connect server on a free port (started on first use, stopped at the end),
    # never one a demo, a user's shell (`eval "$(python -m jobs.platform.config env)"`) or another checkout points at
    os.environ["MLP_SPARK_CONNECT_URL"] = f"sc://127.0.0.1:{free_port()}"
    from jobs.platform.config import get_settings

    get_settings.cache_clear()
    for key, value in get_settings().service_env().items():
        os.environ[key] = value
    os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
    if str(DAGS) not in sys.path:
        sys.path.insert(0, str(DAGS))


def pytest_unconfigure(config: pytest.Config) -> None:
    from jobs.platform.config import get_settings
    from jobs.platform.spark import stop_server

    if _HOME is not None:  # the session's port is its own: stop whichever test's job started the server
        stop_server(get_settings(), any_home=True)
    if _HOME is not None and not os.environ.get("MLP_KEEP_TEST_HOME"):
        shutil.rmtree(_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def platform_home() -> Path:
    assert _HOME is not None
    return _HOME


@pytest.fixture(scope="session")
def settings():
    from jobs.platform.config import get_settings

    return get_settings()


@pytest.fixture(scope="session")
def layout(settings):
    from jobs.platform.storage import StorageLayout

    return StorageLayout(settings)


@pytest.fixture(scope="session")
def spark(settings):
    from jobs.platform.spark import get_spark

    session = get_spark("fraud-tests", settings)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def airflow_db(settings) -> Path:
    """A migrated Airflow metadata database for this test session (SQLite in the local profile)."""
    from jobs.platform.admin import migrate_airflow

    migrate_airflow(settings)  # `airflow db migrate` + the `spark` pool, as an operator would
    return settings.airflow_home


@pytest.fixture(scope="session")
def s3_endpoint(platform_home) -> str:
    """A real S3-compatible HTTP endpoint: ``moto_server`` on a free 127.0.0.1 port (never patched clients)."""
    import time
    import urllib.request

    port = free_port()
    # boto3 reads credentials from the standard chain; moto accepts any key pair
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        os.environ.setdefault(key, value)
    log = open(platform_home / "moto_server.log", "wb")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/data.json", timeout=1).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"moto_server did not start on {url}; see {log.name}") from None
            time.sleep(0.2)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
