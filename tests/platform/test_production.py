"""The production profile over real connections: PostgreSQL (Airflow + MLflow), Redis, an S3 endpoint.

Each test builds its own production :class:`Settings` with ``postgres_db_prefix=fraud_test_g`` so the
databases it creates, migrates and drops never clobber the real ``fraud_*`` ones. A service that is down
makes the test FAIL with the command that starts it (``jobs.platform.admin.START_HINTS``).
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.platform import admin
from jobs.platform.config import REPO_ROOT, Settings

TEST_PREFIX = "fraud_test_g"
INGEST_DAG = "fraud_ingest"


def _require(service: str, settings: Settings) -> None:
    try:
        admin.require(service, settings)
    except admin.ServiceUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


def _subprocess_env(settings: Settings) -> dict[str, str]:
    """What an operator's shell holds for this profile: FRAUD_* overrides + the derived service env."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "MLP_", "FRAUD_", "MLFLOW_"))
    }
    env.update(
        MLP_PROFILE="production",
        MLP_HOME=str(settings.home),
        MLP_POSTGRES_DB_PREFIX=settings.postgres_db_prefix,
        MLP_POSTGRES_HOST=settings.postgres_host,
        MLP_POSTGRES_PORT=str(settings.postgres_port),
        MLP_REDIS_HOST=settings.redis_host,
        MLP_REDIS_PORT=str(settings.redis_port),
    )
    if settings.s3_endpoint_url:
        env["MLP_S3_ENDPOINT_URL"] = settings.s3_endpoint_url
    env.update(settings.service_env())
    env["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
    return env


@pytest.fixture(scope="module")
def prod(tmp_path_factory, s3_endpoint) -> Settings:
    """Production settings on the machine's services, with throw-away databases."""
    settings = Settings(
        profile="production",
        home=tmp_path_factory.mktemp("prod-home"),
        postgres_db_prefix=TEST_PREFIX,
        s3_endpoint_url=s3_endpoint,
    )
    _require("postgres", settings)
    admin.drop_databases(settings)
    yield settings
    admin.drop_databases(settings)


def test_production_profile_maps_every_component_to_its_service(prod: Settings) -> None:
    dbs = prod.postgres_databases
    assert dbs == {c: f"{TEST_PREFIX}_{c}" for c in ("airflow", "mlflow", "feast")}
    assert prod.airflow_db_url.startswith("postgresql+psycopg2://") and prod.airflow_db_url.endswith(
        "/" + dbs["airflow"]
    )
    assert prod.mlflow_tracking_uri.endswith("/" + dbs["mlflow"])
    assert prod.feast_registry_url.endswith("/" + dbs["feast"])
    assert prod.publishes_to_s3
    env = prod.service_env()
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == prod.airflow_db_url
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"].startswith("postgresql+psycopg://")
    assert env["MLP_PROFILE"] == "production"


def test_a_down_service_is_reported_with_how_to_start_it(unused_port: int) -> None:
    down = Settings(profile="production", postgres_port=unused_port, redis_port=unused_port)
    for service, hint in (("postgres", "pg_ctlcluster"), ("redis", "redis-server --daemonize yes")):
        with pytest.raises(admin.ServiceUnavailable, match=hint) as err:
            admin.require(service, down)
        assert f"127.0.0.1:{unused_port}" in str(err.value)
    result = subprocess.run(
        [sys.executable, "-m", "jobs.platform.admin", "check-services", "--services", "redis"],
        env={**os.environ, "MLP_REDIS_PORT": str(unused_port)},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 1
    assert "UNREACHABLE" in result.stdout and "redis-server" in result.stdout


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.production
def test_create_databases_is_idempotent(prod: Settings) -> None:
    first = admin.create_databases(prod)
    assert first == {name: True for name in prod.postgres_databases.values()}
    assert admin.create_databases(prod) == {name: False for name in prod.postgres_databases.values()}


@pytest.mark.production
def test_redis_is_reachable_and_round_trips(prod: Settings) -> None:
    import redis

    _require("redis", prod)
    client = redis.Redis(host=prod.redis_host, port=prod.redis_port, db=prod.redis_db)
    key = f"{TEST_PREFIX}:probe:{os.getpid()}"
    client.set(key, "ok", ex=30)
    assert client.get(key) == b"ok"
    assert 0 < client.ttl(key) <= 30
    client.delete(key)


@pytest.mark.production
@pytest.mark.timeout(1200)
def test_airflow_migrates_on_postgres_and_runs_a_dag(prod: Settings) -> None:
    """`jobs.platform.admin migrate` + `airflow dags test` of the ingest DAG, metadata in PostgreSQL."""
    import psycopg2

    from jobs.fraud.simulate import SimulatorConfig, simulate
    from jobs.platform.storage import StorageLayout

    env = _subprocess_env(prod)
    admin.create_databases(prod)
    result = subprocess.run(
        [sys.executable, "-m", "jobs.platform.admin", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"airflow metadata schema: migrated ({TEST_PREFIX}_airflow)" in result.stdout

    day = dt.date(2018, 4, 2)
    layout = StorageLayout(prod)
    simulate(SimulatorConfig(n_customers=150, n_terminals=300), day, day, layout)
    airflow = str(Path(sys.executable).parent / "airflow")
    result = subprocess.run(
        [airflow, "dags", "test", INGEST_DAG, day.isoformat()],
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"

    with (
        psycopg2.connect(
            host=prod.postgres_host,
            port=prod.postgres_port,
            user=prod.postgres_user,
            dbname=prod.postgres_databases["airflow"],
        ) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT state FROM dag_run WHERE dag_id = %s", (INGEST_DAG,))
        assert [row[0] for row in cur.fetchall()] == ["success"]
        cur.execute(
            "SELECT count(*), count(*) FILTER (WHERE state = 'success') FROM task_instance WHERE dag_id = %s",
            (INGEST_DAG,),
        )
        total, succeeded = cur.fetchone()
    conn.close()
    assert total > 0 and total == succeeded
    assert list(layout.path("transactions", day).glob("*.parquet")), "ingest published no lake partition"


@pytest.mark.production
@pytest.mark.timeout(300)
def test_mlflow_tracking_and_registry_on_postgres_with_s3_artifacts(prod: Settings, s3_endpoint: str) -> None:
    """Log a run, register an XGBoost model, set the champion alias, load it back by alias."""
    import boto3
    import mlflow
    import mlflow.xgboost
    import numpy as np
    import psycopg2
    import xgboost as xgb
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    admin.create_databases(prod)
    admin.migrate_mlflow(prod)
    uri = prod.postgres_url(prod.postgres_databases["mlflow"])
    bucket = f"{TEST_PREFIX.replace('_', '-')}-artifacts"
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name=prod.s3_region)
    s3.create_bucket(Bucket=bucket)

    rng = np.random.default_rng(7)
    x = rng.normal(size=(300, 4)).astype("float32")
    y = (x[:, 0] + 0.5 * x[:, 1] > 0.8).astype(int)
    model = xgb.XGBClassifier(n_estimators=15, max_depth=3, tree_method="hist")
    model.fit(x, y)

    from mlflow.tracking._tracking_service import utils as tracking_utils

    saved_uri = tracking_utils._tracking_uri  # restored below: other tests share this process
    saved_endpoint = os.environ.get("MLFLOW_S3_ENDPOINT_URL")
    os.environ["MLFLOW_S3_ENDPOINT_URL"] = s3_endpoint
    mlflow.set_tracking_uri(uri)
    try:
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        experiment_id = client.create_experiment(
            f"{TEST_PREFIX}-{os.getpid()}", artifact_location=f"s3://{bucket}/mlflow"
        )
        with mlflow.start_run(experiment_id=experiment_id) as run:
            mlflow.log_params({"n_estimators": 15, "max_depth": 3})
            mlflow.log_metric("train_accuracy", float((model.predict(x) == y).mean()))
            info = mlflow.xgboost.log_model(
                model,
                name="model",
                signature=infer_signature(x, model.predict_proba(x)[:, 1]),
                input_example=x[:3],
                model_format="ubj",
            )
        name = f"{TEST_PREFIX}-model"
        version = mlflow.register_model(info.model_uri, name).version
        client.set_registered_model_alias(name, "champion", version)
        client.set_model_version_tag(name, version, "decision_threshold", "0.42")

        loaded = mlflow.xgboost.load_model(f"models:/{name}@champion")
        np.testing.assert_allclose(loaded.predict_proba(x), model.predict_proba(x), rtol=1e-6)
        champion = client.get_model_version_by_alias(name, "champion")
        assert champion.version == version and champion.tags["decision_threshold"] == "0.42"
        assert client.get_run(run.info.run_id).data.metrics["train_accuracy"] > 0.9
    finally:
        tracking_utils._tracking_uri = saved_uri
        if saved_endpoint is None:
            os.environ.pop("MLFLOW_S3_ENDPOINT_URL", None)
        else:
            os.environ["MLFLOW_S3_ENDPOINT_URL"] = saved_endpoint

    # the metadata really is in PostgreSQL and the model files really are in the S3 bucket
    with (
        psycopg2.connect(
            host=prod.postgres_host,
            port=prod.postgres_port,
            user=prod.postgres_user,
            dbname=uri.rsplit("/", 1)[1],
        ) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT alias, version FROM registered_model_aliases WHERE name = %s", (name,))
        assert cur.fetchall() == [("champion", int(version))]
    conn.close()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="mlflow/").get("Contents", [])]
    assert any(k.endswith(".ubj") for k in keys), keys


@pytest.mark.production
def test_create_bucket_is_idempotent_on_the_s3_endpoint(prod: Settings) -> None:
    bucket_settings = prod.model_copy(update={"s3_bucket": f"{TEST_PREFIX.replace('_', '-')}-{os.getpid()}"})
    assert admin.create_bucket(bucket_settings) is True
    assert admin.create_bucket(bucket_settings) is False
    status = admin.check_s3(bucket_settings)
    assert status.ok and f"{bucket_settings.s3_bucket!r} exists" in status.detail
