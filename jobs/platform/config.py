"""The one settings object of the platform.

Every knob is read here and only here, in two parts:

* the platform's settings (profile, services, paths), from environment variables prefixed ``MLP_``
  (the former ``FRAUD_`` names of these are still read, with a deprecation warning);
* one section per use case (:class:`UseCaseSettings`, e.g. ``jobs.fraud.settings``), read from the
  use case's own prefix (``FRAUD_MODEL_NAME``, ``FRAUD_RETRAIN_DRIFT_SHARE``...): its model,
  feature service, Feast project, schedule, gate and monitoring thresholds.

A ``.env`` file may hold either. Two profiles share one schema:

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
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    Field,
    SecretStr,
    SerializeAsAny,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from jobs.platform.params import ABConfig, Thresholds

REPO_ROOT = Path(__file__).resolve().parents[2]
_TH, _AB = Thresholds(), ABConfig()  # the defaults' one source (jobs.platform.params)

Profile = Literal["local", "production"]


ENV_PREFIX = "MLP_"  # platform settings: MLP_HOME, MLP_PROFILE, MLP_SPARK_MASTER, ...
LEGACY_ENV_PREFIX = "FRAUD_"  # the platform's prefix before use cases had sections (still read)


def _renamed(default: Any, name: str, before: str, **rules: Any) -> Any:
    """A settings field also read under the name it had before use cases (``before``)."""
    return Field(default, validation_alias=AliasChoices(name, before), **rules)


class Retrain(BaseModel):
    """When monitoring calls for retraining (``Thresholds`` of :mod:`jobs.platform.monitor`);
    ``<USE CASE>_RETRAIN_*``."""

    drift_share: float = Field(
        _TH.drift_share, ge=0, le=1, description="share of drifted features that triggers"
    )
    prediction_drift: float = Field(
        _TH.prediction_drift, ge=0, description="score drift (Evidently) that triggers"
    )
    max_quality_drop: float = _renamed(
        _TH.max_quality_drop, "max_quality_drop", "max_ap_drop", ge=0, le=1,
        description="relative drop of the primary quality figure vs the baseline",
    )  # fmt: skip
    min_quality: float = _renamed(
        _TH.min_quality, "min_quality", "min_average_precision", ge=0, le=1,
        description="floor of the primary quality figure (0 = off)",
    )  # fmt: skip
    min_positives: int = _renamed(
        _TH.min_positives,
        "min_positives",
        "min_frauds",
        ge=1,
        description="matured positives needed to judge quality",
    )
    cooldown_days: int = Field(_TH.cooldown_days, ge=0, description="a cause is not re-triggered within this")
    post_drift_days: int = Field(
        _TH.post_drift_days,
        ge=0,
        description="days from a drift's detection a drift-caused retrain trains on (it waits for their "
        "labels and a holdout after them; 0 = at once)",
    )


class ABTest(BaseModel):
    """How the A/B analysis decides (``ABConfig`` of :mod:`jobs.platform.ab_analysis`);
    ``<USE CASE>_AB_*``."""

    alpha: float = Field(
        _AB.alpha,
        gt=0,
        lt=0.5,
        description="one-sided false-promotion rate of an experiment, all looks included",
    )
    power: float = Field(_AB.power, gt=0, lt=1, description="planned power at the mde")
    spending: Literal["obrien_fleming", "pocock"] = Field(
        _AB.spending, description="alpha-spending function of the sequential looks"
    )
    look_every_days: int = Field(_AB.look_every_days, ge=1, description="planned spacing of the looks")
    max_days: int = Field(_AB.max_days, ge=1, description="longest duration of an experiment")
    pilot_days: int = Field(
        _AB.pilot_days, ge=1, description="champion traffic before the start sizing the plan"
    )
    min_positives: int = _renamed(
        _AB.min_positives,
        "min_positives",
        "min_frauds",
        ge=1,
        description="matured positives per arm before deciding",
    )
    mde: float = Field(_AB.mde, ge=0, description="smallest primary-metric difference worth acting on")
    max_decision_rate_ratio: float = Field(
        _AB.max_decision_rate_ratio, gt=0, description="guardrail on flag rates"
    )
    srm_alpha: float = Field(
        _AB.srm_alpha,
        gt=0,
        lt=1,
        description="a sample-ratio-mismatch chi-square p below this blocks the verdict",
    )
    max_contamination: float = Field(
        _AB.max_contamination,
        ge=0,
        le=1,
        description="share of units seen in both arms that blocks the verdict",
    )


class UseCaseSettings(BaseSettings):
    """The settings section of one use case, read from its own environment prefix.

    A use case subclasses it (``jobs/<name>/settings.py``), sets ``env_prefix`` (``FRAUD_``,
    ``RANKING_``), gives the defaults of its model, feature service and Feast project and adds its
    own knobs; it names the class in its :class:`~jobs.platform.use_case.UseCase` declaration. The
    nested sections read ``<PREFIX><SECTION>_<FIELD>``, e.g. ``FRAUD_RETRAIN_DRIFT_SHARE``.
    """

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        env_nested_delimiter="_",
        env_nested_max_split=1,
    )

    # --- the simulated world / the schedule -----------------------------------------
    start_date: str = Field("2018-04-01", description="first logical date of the use case's daily DAGs")
    schedule_end_date: dt.date | None = Field(
        None,
        description="last logical date the time-scheduled DAGs run for (a simulated world ends; default: none)",
    )
    label_delay_days: int = Field(7, ge=1, description="labels of a day are complete this many days later")

    # --- model --------------------------------------------------------------------------
    model_name: str = Field(description="registered model name in MLflow")
    feature_service: str = Field(description="Feast feature service the model is trained and served with")
    feast_project: str = Field(description="Feast project (registry namespace, online-store key prefix)")
    train_days: int = Field(14, ge=1, description="default training window (days) of scheduled training")
    holdout_days: int = Field(7, ge=1, description="holdout window (days) the champion/challenger gate uses")
    retrain: Retrain = Field(default_factory=Retrain)
    ab: ABTest = Field(default_factory=ABTest)

    @classmethod
    def env_prefix(cls) -> str:
        return str(cls.model_config.get("env_prefix", ""))

    def env(self) -> dict[str, str]:
        """Environment lines that carry this section's non-default scalar values to a child process."""
        prefix, out = self.env_prefix(), {}
        for name, value in self.model_dump(exclude_defaults=True, mode="json").items():
            if isinstance(value, dict):
                out.update({f"{prefix}{name.upper()}_{k.upper()}": str(v) for k, v in value.items()})
            elif value is not None:
                out[f"{prefix}{name.upper()}"] = str(value)
        return out


class _LegacyEnv(EnvSettingsSource):
    """Platform settings under their former ``FRAUD_`` names (``FRAUD_HOME``...): still honoured,
    with a deprecation warning, where the ``MLP_`` name is not set."""

    def __call__(self) -> dict[str, Any]:
        found = super().__call__()
        if found:
            names = ", ".join(sorted(f"{LEGACY_ENV_PREFIX}{k.upper()}" for k in found))
            warnings.warn(
                f"{names}: platform settings are now read as {ENV_PREFIX}<NAME> (README: Configuration); "
                f"the {LEGACY_ENV_PREFIX} names will stop working in a later release",
                DeprecationWarning,
                stacklevel=2,
            )
        return found


class Settings(BaseSettings):
    """Platform settings (profile, services, paths; ``MLP_*``) and the active use case's section
    (:attr:`case`, read from the use case's own prefix)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    profile: Profile = "local"
    use_case: str = Field("fraud", description="the use case CLIs act on (its DAGs always exist)")
    case: SerializeAsAny[UseCaseSettings] = Field(
        default=None,  # type: ignore[assignment]  # filled from the use case's declaration (_section)
        description="the use case's settings section (its own env prefix, e.g. FRAUD_MODEL_NAME)",
    )

    # where local state lives: data lake, Airflow home, MLflow store, Feast registry
    home: Path = REPO_ROOT / ".platform"

    # --- ingestion gate ----------------------------------------------------------------
    max_bad_fraction: float = Field(0.05, ge=0, le=1, description="the ingest gate fails above this share")
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

    # --- serving ----------------------------------------------------------------------
    serving_host: str = "127.0.0.1"
    serving_port: int = 8000
    serving_api_key: SecretStr | None = None
    serving_workers: int = Field(
        1,
        ge=1,
        le=64,
        description="uvicorn worker processes of `python -m serving.app` (one per core to use); each "
        "loads and reloads its own model bundle and sharing the port",
    )
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

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        legacy = _LegacyEnv(settings_cls, env_prefix=LEGACY_ENV_PREFIX)
        return init_settings, env_settings, dotenv_settings, legacy, file_secret_settings

    @model_validator(mode="before")
    @classmethod
    def _section(cls, data: Any) -> Any:
        """The use case's section, from its declaration, unless one was given."""
        if isinstance(data, dict) and not isinstance(data.get("case"), UseCaseSettings):
            data = {
                **data,
                "case": section_class(data.get("use_case") or cls.model_fields["use_case"].default)(
                    **(data.get("case") or {})
                ),
            }
        return data

    def with_use_case(self, name: str) -> Settings:
        """These platform settings with the section of use case ``name`` (a DAG of another use case)."""
        if name == self.use_case:
            return self
        return self.model_copy(update={"use_case": name, "case": section_class(name)()})

    def with_case(self, **updates: Any) -> Settings:
        """These settings with fields of the use case's section replaced (tests, CLIs)."""
        return self.model_copy(update={"case": self.case.model_copy(update=updates)})

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
            # API-key auth is on in production; an operator must set MLP_SERVING_API_KEY.
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
        return str(self.feast_home / "registry.db")

    @property
    def feast_home(self) -> Path:
        """Local Feast files of the use case (file registry, SQLite online store)."""
        return self.home / "feast" / self.use_case

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
            f"{ENV_PREFIX}PROFILE": self.profile,
            f"{ENV_PREFIX}HOME": str(self.home),
            f"{ENV_PREFIX}USE_CASE": self.use_case,
            **({f"{ENV_PREFIX}SPARK_CONNECT_URL": self.spark_connect_url} if self.spark_connect_url else {}),
            **self.case.env(),
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


def section_class(use_case: str) -> type[UseCaseSettings]:
    """The settings section class use case ``use_case`` declares."""
    from jobs.platform.use_case import get_use_case

    return get_use_case(name=use_case).settings


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
