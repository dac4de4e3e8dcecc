"""Operations for the production profile: databases, schemas and service reachability.

``python -m jobs.platform.admin create-databases``  one PostgreSQL database per component (idempotent)
``python -m jobs.platform.admin migrate``           Airflow ``db migrate`` + MLflow tracking/registry schema
``python -m jobs.platform.admin create-bucket``     the S3 bucket of published predictions/reports (idempotent)
``python -m jobs.platform.admin check-services``    PostgreSQL, Redis and S3 reachable? says how to start each one

Everything is derived from :class:`jobs.platform.config.Settings` (``MLP_*`` variables), so the same commands
work against the machine's services, a test database (``MLP_POSTGRES_DB_PREFIX=fraud_test``) or the
containers of ``docker/compose.yaml``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from jobs.platform.config import Settings, get_settings
from jobs.platform.logs import get_logger
from jobs.platform.procs import child_env

START_HINTS: dict[str, str] = {
    "postgres": "start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    "redis": 'start it with: redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no',
    "s3": "start an S3-compatible endpoint, e.g.: .venv/bin/moto_server -H 127.0.0.1 -p 5050 "
    "(and set MLP_S3_ENDPOINT_URL=http://127.0.0.1:5050), or set MLP_S3_ENDPOINT_URL to your store",
}


class ServiceUnavailable(RuntimeError):
    """A production service cannot be reached; the message says which, where, why and how to start it."""


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    address: str
    ok: bool
    detail: str

    def message(self) -> str:
        if self.ok:
            return f"{self.name} at {self.address}: ok ({self.detail})"
        return f"{self.name} at {self.address}: UNREACHABLE ({self.detail}); {START_HINTS[self.name]}"


def _connect_postgres(settings: Settings, database: str = "postgres", timeout: int = 3):
    import psycopg2

    return psycopg2.connect(
        host=settings.postgres_host,
        port=settings.postgres_port,
        user=settings.postgres_user,
        password=settings.postgres_password.get_secret_value() or None,
        dbname=database,
        connect_timeout=timeout,
    )


def check_postgres(settings: Settings | None = None) -> ServiceStatus:
    settings = settings or get_settings()
    address = f"{settings.postgres_host}:{settings.postgres_port}"
    try:
        with _connect_postgres(settings) as conn, conn.cursor() as cur:
            cur.execute("SHOW server_version")
            version = cur.fetchone()[0]
        conn.close()
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable", reported with its cause
        return ServiceStatus("postgres", address, False, f"{type(exc).__name__}: {str(exc).strip()[:200]}")
    return ServiceStatus("postgres", address, True, f"PostgreSQL {version}")


def check_redis(settings: Settings | None = None) -> ServiceStatus:
    import redis

    settings = settings or get_settings()
    address = f"{settings.redis_host}:{settings.redis_port}/{settings.redis_db}"
    try:
        client = redis.Redis(
            host=settings.redis_host, port=settings.redis_port, db=settings.redis_db, socket_timeout=3
        )
        client.ping()
        version = client.info("server")["redis_version"]
        client.close()
    except Exception as exc:  # noqa: BLE001
        return ServiceStatus("redis", address, False, f"{type(exc).__name__}: {str(exc).strip()[:200]}")
    return ServiceStatus("redis", address, True, f"Redis {version}")


def check_s3(settings: Settings | None = None) -> ServiceStatus:
    import boto3
    from botocore.config import Config

    settings = settings or get_settings()
    address = settings.s3_endpoint_url or f"AWS S3 ({settings.s3_region})"
    try:
        client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            config=Config(connect_timeout=3, read_timeout=5, retries={"max_attempts": 1}),
        )
        names = [b["Name"] for b in client.list_buckets().get("Buckets", [])]
    except Exception as exc:  # noqa: BLE001
        return ServiceStatus("s3", address, False, f"{type(exc).__name__}: {str(exc).strip()[:200]}")
    has = "exists" if settings.s3_bucket in names else "not created yet"
    return ServiceStatus("s3", address, True, f"{len(names)} bucket(s); {settings.s3_bucket!r} {has}")


CHECKS = {"postgres": check_postgres, "redis": check_redis, "s3": check_s3}


def check_services(
    settings: Settings | None = None, services: tuple[str, ...] = ("postgres", "redis", "s3")
) -> list[ServiceStatus]:
    return [CHECKS[name](settings) for name in services]


def require(service: str, settings: Settings | None = None) -> ServiceStatus:
    """Raise :class:`ServiceUnavailable` (with how to start it) unless ``service`` answers."""
    status = CHECKS[service](settings)
    if not status.ok:
        raise ServiceUnavailable(status.message())
    return status


def create_databases(settings: Settings | None = None) -> dict[str, bool]:
    """Create every database of ``settings.postgres_databases`` that is missing. Returns name -> created."""
    from psycopg2 import sql

    settings = settings or get_settings()
    require("postgres", settings)
    log = get_logger("admin.create_databases")
    created: dict[str, bool] = {}
    conn = _connect_postgres(settings)
    conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
    try:
        with conn.cursor() as cur:
            for name in settings.postgres_databases.values():
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone():
                    created[name] = False
                    continue
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                created[name] = True
                log.info("database_created", database=name)
    finally:
        conn.close()
    return created


def create_bucket(settings: Settings | None = None) -> bool:
    """Create the platform's S3 bucket if missing (idempotent). Returns whether it was created."""
    import boto3

    settings = settings or get_settings()
    require("s3", settings)
    client = boto3.client("s3", endpoint_url=settings.s3_endpoint_url, region_name=settings.s3_region)
    names = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if settings.s3_bucket in names:
        return False
    client.create_bucket(Bucket=settings.s3_bucket)
    get_logger("admin.create_bucket").info("bucket_created", bucket=settings.s3_bucket)
    return True


def drop_databases(settings: Settings) -> None:
    """Drop this settings' databases (test clean-up; refuses the default ``fraud`` prefix)."""
    from psycopg2 import sql

    if settings.postgres_db_prefix == "fraud":
        raise ValueError("postgres_db_prefix='fraud': refusing to drop the real databases")
    conn = _connect_postgres(settings)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for name in settings.postgres_databases.values():
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    finally:
        conn.close()


def migrate_mlflow(settings: Settings | None = None) -> str:
    """Create or upgrade the MLflow tracking + model-registry schema in its PostgreSQL database."""
    import mlflow.store.db.utils as db_utils
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    settings = settings or get_settings()
    uri = settings.postgres_url(settings.postgres_databases["mlflow"])
    engine = db_utils.create_sqlalchemy_engine(uri)
    try:
        if db_utils._all_tables_exist(engine):
            db_utils._upgrade_db(engine)  # what `mlflow db upgrade` runs; a no-op at head
        else:
            SqlAlchemyStore(uri, settings.mlflow_artifact_root)  # creates tables + stamps head
        return db_utils._get_schema_version(engine)
    finally:
        engine.dispose()


def _airflow_cli() -> str:
    """The ``airflow`` command of this interpreter's environment."""
    return shutil.which("airflow", path=str(Path(sys.executable).parent)) or "airflow"


def migrate_airflow(settings: Settings | None = None) -> None:
    """``airflow db migrate`` against the settings' metadata database (a subprocess, like an operator)."""
    settings = settings or get_settings()
    env = child_env(**settings.service_env())
    airflow = _airflow_cli()
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    result = subprocess.run([airflow, "db", "migrate"], env=env, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    ensure_pools(settings, env)


def ensure_pools(settings: Settings, env: dict[str, str] | None = None) -> None:
    """The Airflow pool that bounds concurrent Spark work (idempotent: ``airflow pools set``)."""
    from jobs.platform.spark import AIRFLOW_POOL

    env = env or child_env(**settings.service_env())
    airflow = _airflow_cli()
    description = "tasks that run Spark jobs against the platform's Spark service"
    result = subprocess.run(
        [airflow, "pools", "set", AIRFLOW_POOL, str(settings.spark_pool_slots), description],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        raise RuntimeError(f"airflow pools set {AIRFLOW_POOL} failed:\n{result.stderr[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.platform.admin", description=__doc__)
    parser.add_argument("command", choices=["create-databases", "migrate", "create-bucket", "check-services"])
    parser.add_argument(
        "--services", default="postgres,redis,s3", help="comma-separated subset for check-services"
    )
    args = parser.parse_args(argv)
    settings = get_settings()
    log = get_logger(f"admin.{args.command}")
    try:
        if args.command == "create-databases":
            for name, was_created in create_databases(settings).items():
                print(f"{name}: {'created' if was_created else 'exists'}")
        elif args.command == "create-bucket":
            created = create_bucket(settings)
            print(f"s3://{settings.s3_bucket}: {'created' if created else 'exists'}")
        elif args.command == "migrate":
            migrate_airflow(settings)
            print(f"airflow metadata schema: migrated ({settings.postgres_databases['airflow']})")
            revision = migrate_mlflow(settings)
            print(f"mlflow schema: {revision} ({settings.postgres_databases['mlflow']})")
        else:
            statuses = check_services(settings, tuple(s for s in args.services.split(",") if s))
            for status in statuses:
                print(status.message())
            return 0 if all(s.ok for s in statuses) else 1
    except ServiceUnavailable as exc:
        log.error("service_unavailable", error=str(exc))
        print(str(exc), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
