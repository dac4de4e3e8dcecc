"""The one settings object of the platform.

Every knob is read here and only here: environment variables prefixed ``FRAUD_`` (or a ``.env``
file) override the defaults. Two profiles share one schema:

* ``local`` (the embedded default): SQLite for Airflow, MLflow and the Feast online store, local
  files under one home folder, Spark ``local[*]``.
* ``production``: PostgreSQL for Airflow and MLflow metadata and the Feast registry, Redis for the
  Feast online store, an S3 bucket for published predictions and reports, a Spark master URL.

Run ``python -m jobs.platform.config`` to print the effective settings (secrets masked) or
``python -m jobs.platform.config env`` for the environment lines that Airflow, MLflow and Spark read.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from jobs.platform.params import ABConfig, Thresholds

REPO_ROOT = Path(__file__).resolve().parents[2]
_TH, _AB = Thresholds(), ABConfig()  # the defaults' one source (jobs.platform.params)

Profile = Literal["local", "production"]


class Costs(BaseSettings):
    """Business cost of each error kind, used to choose the decision threshold."""

    model_config = SettingsConfigDict(env_prefix="FRAUD_COST_", extra="ignore")

    false_positive: float = Field(
        5.0, ge=0, description="analyst review + customer friction of a false alarm"
    )
    false_negative: float = Field(100.0, ge=0, description="expected chargeback loss of a missed fraud")


class Gate(BaseSettings):
    """Champion/challenger gate: how much better a challenger must be, and what it may not break."""

    model_config = SettingsConfigDict(env_prefix="FRAUD_GATE_", extra="ignore")

    margin: float = Field(0.0, ge=0, description="challenger AP must exceed champion AP by more than this")
    guardrail_tolerance: float = Field(0.02, ge=0, description="max drop of AUC ROC / card precision@100")
    slice_tolerance: float = Field(0.05, ge=0, description="max AP drop in any slice with enough frauds")
    min_slice_frauds: int = Field(20, ge=1, description="slices with fewer frauds are not gated (noise)")
    min_auc_roc: float = Field(0.70, ge=0, le=1, description="absolute floor for any champion")
    min_average_precision: float = Field(0.10, ge=0, le=1, description="absolute floor for any champion")


class Retrain(BaseSettings):
    """When monitoring calls for retraining (``Thresholds`` of :mod:`jobs.platform.monitor`)."""

    model_config = SettingsConfigDict(env_prefix="FRAUD_RETRAIN_", extra="ignore")

    drift_share: float = Field(
        _TH.drift_share, ge=0, le=1, description="share of drifted features that triggers"
    )
    prediction_drift: float = Field(
        _TH.prediction_drift, ge=0, description="score drift (Evidently) that triggers"
    )
    max_ap_drop: float = Field(
        _TH.max_ap_drop, ge=0, le=1, description="relative quality drop vs the baseline"
    )
    min_average_precision: float = Field(
        _TH.min_average_precision, ge=0, le=1, description="quality floor (0 = off)"
    )
    min_frauds: int = Field(_TH.min_frauds, ge=1, description="matured positives needed to judge quality")
    cooldown_days: int = Field(_TH.cooldown_days, ge=0, description="a cause is not re-triggered within this")


class ABTest(BaseSettings):
    """How the A/B analysis decides (``ABConfig`` of :mod:`jobs.platform.ab_analysis`)."""

    model_config = SettingsConfigDict(env_prefix="FRAUD_AB_", extra="ignore")

    alpha: float = Field(_AB.alpha, gt=0, lt=1, description="significance level")
    min_frauds: int = Field(_AB.min_frauds, ge=1, description="matured positives per arm before deciding")
    mde: float = Field(_AB.mde, ge=0, description="smallest primary-metric difference worth acting on")
    max_decision_rate_ratio: float = Field(
        _AB.max_decision_rate_ratio, gt=0, description="guardrail on flag rates"
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FRAUD_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    profile: Profile = "local"
    use_case: str = "fraud"

    # where local state lives: data lake, Airflow home, MLflow store, Feast registry
    home: Path = REPO_ROOT / ".platform"

    # --- simulator / data -------------------------------------------------------------
    start_date: str = "2018-04-01"
    schedule_end_date: dt.date | None = Field(
        None,
        description="last logical date the time-scheduled DAGs run for (a simulated world ends; default: none)",
    )
    label_delay_days: int = Field(7, ge=1, description="labels of a day are complete this many days later")

    # --- ingestion gate ----------------------------------------------------------------
    max_bad_fraction: float = Field(0.05, ge=0, le=1, description="the ingest gate fails above this share")
    max_customer_id: int = Field(10_000_000, gt=0, description="ingest rejects customer ids outside [0, max)")
    max_terminal_id: int = Field(10_000_000, gt=0, description="ingest rejects terminal ids outside [0, max)")
    gx_engine: Literal["auto", "pandas", "spark"] = Field(
        "auto", description="where GX validates a batch: auto = pandas up to gx_pandas_max_rows, else Spark"
    )
    gx_pandas_max_rows: int = Field(
        500_000, ge=0, description="auto: batches up to this many rows are validated in the driver"
    )
    landing_wait_seconds: int = Field(
        6 * 3600, ge=0, description="a daily run waits this long for its landing files, then fails"
    )
    sensor_poke_seconds: int = Field(60, ge=1, description="how often a waiting daily run looks again")
    landing_done_marker: str = Field(
        "_SUCCESS",
        description="a day's landing folder is complete once this file is in it (written by the producer after "
        "its last file); empty = as soon as one *.csv is there",
    )

    # --- spark ------------------------------------------------------------------------
    spark_master: str = Field(
        "local[2]",
        description="master of the Spark service (or of an in-process session): local[N] or spark://",
    )
    spark_connect_url: str | None = Field(
        "sc://127.0.0.1:15002",
        description="Spark Connect server every job uses; empty = an in-process driver per job",
    )
    spark_connect_autostart: bool = Field(
        True, description="start the embedded Connect server on first use when a loopback URL has none"
    )
    spark_cluster_cores: int = Field(2, ge=1, description="cores of a spark:// cluster (sizes partitioning)")
    spark_pool_slots: int = Field(
        2, ge=1, description="Airflow pool `spark`: Spark tasks that may run at once against the service"
    )
    spark_driver_memory: str = "2g"
    spark_shuffle_partitions: int = 4
    spark_whole_stage_codegen: bool = Field(
        False,
        description="compile each query stage to Java (Spark's default); off suits the small daily batches of "
        "the embedded profile, where compiling costs more than it saves (README: Spark as a service)",
    )
    spark_log_level: str = Field("WARN", description="log level of the Spark Connect server (log4j2)")

    # --- production services ----------------------------------------------------------
    postgres_host: str = "127.0.0.1"
    postgres_port: int = 5432
    postgres_user: str = "postgres"
    postgres_password: SecretStr = SecretStr("")
    postgres_db_prefix: str = Field("fraud", description="database names are <prefix>_<component>")
    redis_host: str = "127.0.0.1"
    redis_port: int = 6379
    redis_db: int = 0
    s3_bucket: str = "fraud-platform"
    s3_prefix: str = ""
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_max_attempts: int = Field(
        6, ge=1, description="botocore attempts per S3 request (adaptive retry mode)"
    )
    s3_upload_attempts: int = Field(
        3, ge=1, description="whole-file upload attempts on top of botocore retries"
    )
    s3_multipart_threshold_mb: int = Field(64, ge=5, description="files at least this large upload in parts")
    s3_multipart_chunksize_mb: int = Field(16, ge=5, description="part size of a multipart upload")

    # --- model / decision -------------------------------------------------------------
    model_name: str = "fraud-detector"
    feature_service: str = "fraud_v2"
    feast_project: str = Field(
        "fraud", description="Feast project (registry namespace, online-store key prefix)"
    )
    costs: Costs = Field(default_factory=Costs)
    gate: Gate = Field(default_factory=Gate)
    retrain: Retrain = Field(default_factory=Retrain)
    ab: ABTest = Field(default_factory=ABTest)
    train_days: int = Field(14, ge=1, description="default training window (days) of scheduled training")
    holdout_days: int = Field(7, ge=1, description="holdout window (days) the champion/challenger gate uses")

    # --- serving ----------------------------------------------------------------------
    serving_host: str = "127.0.0.1"
    serving_port: int = 8000
    serving_api_key: SecretStr | None = None
    serving_challenger_mode: Literal["off", "shadow", "canary"] = "off"
    serving_canary_share: float = Field(
        0.1, ge=0, le=1, description="share of customers routed to the challenger"
    )
    serving_reload_seconds: float = Field(
        10.0, gt=0, description="how often serving polls the registry aliases"
    )
    serving_log_queue_size: int = Field(100_000, ge=1, description="bounded prediction-log queue")
    serving_log_flush_seconds: float = Field(2.0, gt=0, description="prediction-log file roll interval")
    serving_push_features: bool = Field(True, description="push scored transactions to the Feast push source")
    serving_max_request_bytes: int = Field(
        1_048_576, ge=1, description="request bodies over this size are answered 413 before they are parsed"
    )
    airflow_port: int = 8080
    airflow_parallelism: int = Field(4, ge=1, description="task slots of the local scheduler (LocalExecutor)")
    airflow_preload_modules: list[str] = Field(
        default_factory=lambda: [
            "pandas",
            "pyarrow.parquet",
            "pyspark.sql.connect.session",
            "great_expectations",
            "feast",
            "feast.infra.offline_stores.dask",
            "feast.infra.online_stores.sqlite",
            "dask.dataframe",
            "xgboost",
            "mlflow",
            "sklearn.metrics",
            "evidently",
        ],
        description="imported by the scheduler before it forks workers, so tasks start with them loaded",
    )
    mlflow_port: int = 5000
    mlflow_server_url: str | None = Field(
        None, description="production containers: talk to this MLflow tracking server, not its database"
    )

    @field_validator("spark_connect_url", mode="after")
    @classmethod
    def _empty_is_in_process(cls, value: str | None) -> str | None:
        if not value:
            return None
        from urllib.parse import urlparse

        url = urlparse(value)
        try:
            port = url.port
        except ValueError:
            port = -1
        if url.scheme != "sc" or not url.hostname or port == -1:
            raise ValueError(f"{value!r} is not a Spark Connect URL (rule: sc://host:port)")
        return value

    @field_validator("home", mode="after")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @model_validator(mode="after")
    def _production_needs_key(self) -> Settings:
        if self.profile == "production" and self.serving_api_key is None:
            # API-key auth is on in production; an operator must set FRAUD_SERVING_API_KEY.
            self.serving_api_key = SecretStr(os.urandom(16).hex())
        return self

    # --- derived values: the single place that knows them ------------------------------
    @property
    def data_root(self) -> Path:
        return self.home / "data"

    @property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    def postgres_url(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        password = self.postgres_password.get_secret_value()
        auth = self.postgres_user + (f":{password}" if password else "")
        return f"{driver}://{auth}@{self.postgres_host}:{self.postgres_port}/{database}"

    @property
    def postgres_databases(self) -> dict[str, str]:
        """One database per component, created by ``make db-production``."""
        return {c: f"{self.postgres_db_prefix}_{c}" for c in ("airflow", "mlflow", "feast")}

    @property
    def airflow_db_url(self) -> str:
        if self.profile == "production":
            return self.postgres_url(self.postgres_databases["airflow"])
        return f"sqlite:///{self.airflow_home / 'airflow.db'}"

    @property
    def mlflow_tracking_uri(self) -> str:
        if self.mlflow_server_url:
            return self.mlflow_server_url
        if self.profile == "production":
            return self.postgres_url(self.postgres_databases["mlflow"])
        return f"sqlite:///{self.home / 'mlflow' / 'mlflow.db'}"

    @property
    def mlflow_artifact_root(self) -> str:
        return str(self.home / "mlflow" / "artifacts")

    @property
    def redis_connection_string(self) -> str:
        return f"{self.redis_host}:{self.redis_port},db={self.redis_db}"

    @property
    def feast_registry_url(self) -> str:
        if self.profile == "production":
            return self.postgres_url(self.postgres_databases["feast"])
        return str(self.home / "feast" / "registry.db")

    @property
    def publishes_to_s3(self) -> bool:
        return self.profile == "production"

    def service_env(self) -> dict[str, str]:
        """Environment for the third-party processes this platform drives (Airflow, MLflow, Spark)."""
        return {
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.airflow_db_url,
            # Airflow 3 also opens an async engine; psycopg (3) serves both, asyncpg is not installed
            **(
                {
                    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": self.postgres_url(
                        self.postgres_databases["airflow"], driver="postgresql+psycopg"
                    )
                }
                if self.profile == "production"
                else {}
            ),
            "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "60",
            # the LocalExecutor forks this many workers up front: sized for the machine, not 32
            "AIRFLOW__CORE__PARALLELISM": str(self.airflow_parallelism),
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
            "AIRFLOW__API__PORT": str(self.airflow_port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            # tasks report to the API server's execution API (Airflow 3): the same host and port
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.airflow_port}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.airflow_home / "passwords.json"),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "MLFLOW_TRACKING_URI": self.mlflow_tracking_uri,
            "PYTHONPATH": str(REPO_ROOT),
            "FRAUD_PROFILE": self.profile,
            "FRAUD_HOME": str(self.home),
            **({"FRAUD_SCHEDULE_END_DATE": str(self.schedule_end_date)} if self.schedule_end_date else {}),
            **({"FRAUD_SPARK_CONNECT_URL": self.spark_connect_url} if self.spark_connect_url else {}),
        }

    def public_dict(self) -> dict[str, object]:
        data = json.loads(self.model_dump_json())
        for key in ("postgres_password", "serving_api_key"):
            if data.get(key):
                data[key] = "***"
        data.update(
            data_root=str(self.data_root),
            airflow_db_url=self.airflow_db_url,
            mlflow_tracking_uri=self.mlflow_tracking_uri,
            feast_registry_url=self.feast_registry_url,
        )
        return data


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached). Tests call ``get_settings.cache_clear()`` after changing env."""
    return Settings()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.platform.config", description=__doc__)
    parser.add_argument("what", nargs="?", choices=["show", "env"], default="show")
    args = parser.parse_args(argv)
    settings = get_settings()
    if args.what == "env":
        for key, value in settings.service_env().items():
            print(f"export {key}='{value}'")
    else:
        json.dump(settings.public_dict(), sys.stdout, indent=2, default=str)
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
