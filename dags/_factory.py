"""The DAG factory: every use case gets the same five DAGs from :func:`use_case_dags`.

``dags/<use case>.py`` is one line, ``globals().update(use_case_dags("<use case>"))``; the DAGs are

* ``<uc>_ingest``               daily: landing CSV -> validated lake partitions, one task per dataset the use
                                case declares (GX suite, quarantine, the bad-row gate); emits ``<uc>_lake_<dataset>``
* ``<uc>_build_features``       on any lake asset: the use case's feature job for every stale snapshot day,
                                then Feast apply + incremental materialize; emits ``<uc>_offline_features``
* ``<uc>_train_model``          weekly, by hand, or triggered by monitoring: train -> challenger -> gate -> promote
                                (the job's own steps, :mod:`jobs.platform.train`); emits ``<uc>_champion_model``
* ``<uc>_batch_predict``        daily, once the day's inputs exist: score with the champion, write (and publish)
                                ``predictions/date=D``; emits ``<uc>_batch_predictions``
* ``<uc>_monitor_and_retrain``  daily: Evidently drift and matured quality; triggers ``<uc>_train_model``

Assets are grouped by use case (``group=<uc>``). Params are built from the jobs' typed defaults
(:mod:`jobs.platform.params`); contract and data errors fail without retry (``fail_without_retry``).
Only the use case's declaration is loaded while parsing (it is import-light: its implementations are
imported when a task runs). Kept free of Spark, pandas, MLflow and Feast at module level.
"""

from __future__ import annotations

import datetime as dt
import functools
import operator
from dataclasses import dataclass

from _common import (
    DAILY,
    DEFAULT_ARGS,
    INGEST_PRIORITY,
    REBUILD_PRIORITY,
    SPARK_POOL,
    WEEKLY,
    data_wait,
    end_date,
    fail_without_retry,
    get_settings,
    nothing_missing,
    processing_date,
    start_date,
    use_case_settings,
)
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, Asset, Param, dag, task

from jobs.platform.params import MonitorConfig, Thresholds, TrainParams
from jobs.platform.storage import StorageLayout
from jobs.platform.use_case import UseCase, get_use_case
from jobs.platform.use_case import dag_id as use_case_dag_id

_DATE = ["null", "string"]
FEATURE_WAIT = dt.timedelta(hours=6)


@dataclass(frozen=True)
class UseCaseAssets:
    """The Airflow assets of one use case (names prefixed and grouped by the use case)."""

    lake: dict[str, Asset]
    features: Asset
    predictions: Asset
    champion: Asset

    @classmethod
    def of(cls, uc: UseCase) -> UseCaseAssets:
        settings = use_case_settings(uc.name)
        layout = StorageLayout(settings)

        def asset(name: str, dataset: str) -> Asset:
            return Asset(
                name=f"{uc.name}_{name}", uri=f"file://{layout.dataset_root(dataset)}", group=uc.name
            )

        return cls(
            lake={name: asset(f"lake_{name}", spec.lake) for name, spec in uc.datasets.items()},
            features=asset("offline_features", "features"),
            predictions=asset("batch_predictions", uc.batch_output),
            champion=Asset(
                name=f"{uc.name}_champion_model",
                uri=f"model://{settings.case.model_name}/champion",
                group=uc.name,
            ),
        )


@functools.cache
def _assets(name: str) -> UseCaseAssets:
    """One set of assets per use case and process: an asset's URI names the data root it was first
    parsed with, and Airflow deactivates an asset whose name comes back with another URI."""
    return UseCaseAssets.of(get_use_case(name=name))


def use_case_dags(name: str) -> dict[str, DAG]:
    """The five DAGs of use case ``name``, by dag id."""
    uc = get_use_case(name=name)
    assets = _assets(name)
    dags = [
        ingest_dag(uc, assets),
        build_features_dag(uc, assets),
        train_model_dag(uc, assets),
        batch_predict_dag(uc, assets),
        monitor_and_retrain_dag(uc, assets),
    ]
    return {d.dag_id: d for d in dags}


def _day_param(context) -> str:
    """The day a daily run processes: the ``date`` param when given, else the run's (its logical date)."""
    return context["params"].get("date") or processing_date(context)


def _dag_args(uc: UseCase, *, timed: bool = True) -> dict:
    """What every DAG of a use case shares: its start date (and, when time-scheduled, its end date:
    ``<USE CASE>_SCHEDULE_END_DATE``), no catch-up, the default task policy."""
    return {
        "start_date": start_date(uc.name),
        **({"end_date": end_date(uc.name)} if timed else {}),
        "catchup": False,
        "default_args": DEFAULT_ARGS,
    }


# --- ingest ---------------------------------------------------------------------------------------
def ingest_dag(uc: UseCase, assets: UseCaseAssets) -> DAG:
    dag_id = use_case_dag_id(uc.name, "ingest")
    datasets = list(uc.datasets)
    lake_list = "\n".join(
        f"* `{uc.name}/landing/{d}/date=D/*.csv` -> `{uc.name}/lake/{d}/date=D`"
        f" (asset `{assets.lake[d].name}`, suite `expectations/{uc.name}/{uc.datasets[d].suite_name}.json`)"
        for d in datasets
    )
    doc = f"""
### Ingest the `{uc.name}` datasets

A run with logical date **D** (data interval D 00:00 -> D+1 00:00 UTC) ingests, one task each in the `spark` pool:

{lake_list}

`wait_for_landing` first waits for every landing folder of D to be complete (a `*.csv` and the producer's
`_SUCCESS` marker, `landing_done_marker` in settings; a sensor in reschedule mode: the files of D arrive
after D has ended; it fails after `landing_wait_seconds`). Each task parses, casts, de-duplicates on the
dataset's key and validates with its Great Expectations suite. Bad rows go to `quarantine/<dataset>/date=D`
with their reasons; GX data docs to `reports/gx_data_docs/<dataset>/date=D`; a run summary to
`reports/ingest/<dataset>/date=D/summary.json`. Rows in = rows published + rows quarantined on every run.

**Gate**: if the share of bad rows is above `max_bad_fraction` (settings, or this run's param) the task
fails without retrying and **nothing is published** for D; a broken file (empty, missing or unknown column)
fails the same way, naming the file, column and rule. Re-running a day is safe: partitions are replaced
atomically. Each asset event carries `extra={{"date": "YYYY-MM-DD"}}`.

**Backfill**: `airflow backfill create --dag-id {dag_id} --from-date 2018-04-01 --to-date 2018-04-30`.
Code: `jobs/platform/ingest.py` (`python -m jobs.platform.ingest --date D` runs the same logic without Airflow).
"""

    def ingest_one(dataset: str, **context) -> dict:
        from jobs.platform.ingest import IngestError, ingest

        day = _day_param(context)
        settings = use_case_settings(uc.name)
        if context["params"].get("max_bad_fraction") is not None:
            settings = settings.model_copy(
                update={"max_bad_fraction": float(context["params"]["max_bad_fraction"])}
            )
        with fail_without_retry(IngestError):  # deterministic data problem: retrying cannot help
            result = ingest(dataset, day, settings)
        context["outlet_events"][assets.lake[dataset]].extra = {
            "date": day,
            "rows": result.published,
            "quarantined": result.quarantined,
        }
        return result.as_dict()

    @dag(
        dag_id=dag_id,
        schedule=DAILY,
        max_active_runs=2,
        **_dag_args(uc),
        doc_md=doc,
        tags=[uc.name, "ingestion"],
        params={
            "date": Param(
                None,
                type=_DATE,
                format="date",
                description="Process this day (YYYY-MM-DD) instead of the run's data interval start.",
            ),
            "max_bad_fraction": Param(
                None,
                type=["null", "number"],
                minimum=0,
                maximum=1,
                description="Override the gate for this run (default: settings.max_bad_fraction).",
            ),
        },
    )
    def ingest_use_case():
        @task.sensor(task_id="wait_for_landing", **data_wait())
        def wait_for_landing(**context) -> bool:
            """Day D's files land after D has ended: wait for them (reschedule mode), fail after the timeout."""
            from jobs.platform.ingest import missing_landing

            day = _day_param(context)
            return nothing_missing(dag_id, day, missing_landing(day, use_case_settings(uc.name)))

        results = {
            name: task(
                task_id=f"ingest_{name}",
                outlets=[assets.lake[name]],
                pool=SPARK_POOL,
                doc_md=f"Landing `{name}` of D -> lake (or quarantine).",
                **INGEST_PRIORITY,
            )(ingest_one)(name)
            for name in datasets
        }

        @task
        def log_counts(results: dict) -> dict:
            """One structured line with the day's counts (also the task's return value)."""
            from jobs.platform.logs import get_logger

            keys = ("rows_in", "published", "quarantined", "bad_fraction", "seconds")
            counts = {name: {k: r[k] for k in keys} for name, r in results.items()}
            get_logger(dag_id, next(iter(results.values()))["date"]).info("ingest counts", **counts)
            return counts

        wait_for_landing() >> list(results.values())
        log_counts(results)

    return ingest_use_case()


# --- build features ----------------------------------------------------------------------------------
def snapshot_days(context, uc: UseCase | None = None) -> list[str]:
    """Days to build: the `date`..`end` params of a manual run, else every stale snapshot day of the
    use case (default: the process settings')."""
    params = context["params"]
    if params.get("date"):
        start = dt.date.fromisoformat(params["date"])
        end = dt.date.fromisoformat(params.get("end") or params["date"])
        if end < start:
            raise ValueError(f"end: value {end} is before date {start} (rule: date <= end)")
        return [(start + dt.timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]
    uc = uc or get_use_case(name=get_settings().use_case)
    return [d.isoformat() for d in uc.feature_job.stale_days(use_case_settings(uc.name))]


def event_days(context) -> list[str]:
    """The days named by the asset events that woke this run (logged; the work comes from the lake)."""
    days = set()
    for events in (context.get("triggering_asset_events") or {}).values():
        for event in events:
            if (event.extra or {}).get("date"):
                days.add(str(event.extra["date"])[:10])
    return sorted(days)


def build_features_dag(uc: UseCase, assets: UseCaseAssets) -> DAG:
    dag_id = use_case_dag_id(uc.name, "build_features")
    doc = f"""
### Build features: the `{uc.name}` feature job -> offline feature tables -> Feast online store

**Scheduled on any of the lake assets** ({", ".join(f"`{a.name}`" for a in assets.lake.values())}): each time
ingestion publishes a day this DAG wakes up, builds every **stale** snapshot day and loads it into the online
store. What to build comes from the lake, not from the events (the use case's `stale_days`: a day whose
tables are missing or whose input partitions changed by content since they were built), so the tables never
depend on the order ingest runs finished in, nor on how the scheduler grouped the events (Airflow merges an
event that arrives while an earlier one is queued, apache/airflow#56050: `new_data_since_build` then sees the
stale day and `catch_up` triggers the next run). For a manual rebuild use *Trigger DAG w/ config* with
`date` (and optionally `end`).

1. **build** - the use case's feature job (Spark) for each contiguous run of stale days.
2. **materialize** - `jobs.platform.feature_store.apply()` (idempotent, keeps the watermarks) then
   `materialize(...)`: incremental from the registry's watermark, a full load when it is missing, a re-write
   from the first day up to the watermark for a backfill. Emits `{assets.features.name}` with extra
   `{{"date": <last day>, "dates": [...]}}`. Skipped when nothing was stale.
3. **new_data_since_build** / **catch_up** - if a lake partition was written while this run built and left
   a stale day, trigger this DAG again.

Runs one at a time (`max_active_runs=1`) so the online store only moves forward.
"""

    @dag(
        dag_id=dag_id,
        schedule=functools.reduce(operator.or_, assets.lake.values()),  # any lake asset
        max_active_runs=1,
        **_dag_args(uc, timed=False),
        doc_md=doc,
        tags=[uc.name, "features"],
        params={
            "date": Param(
                None,
                type=_DATE,
                format="date",
                description="manual runs: first snapshot day (YYYY-MM-DD); empty = every stale day",
            ),
            "end": Param(
                None,
                type=_DATE,
                format="date",
                description="manual runs: last snapshot day of a range (default: `date`)",
            ),
        },
    )
    def build_features_use_case():
        @task(task_id="build", pool=SPARK_POOL, **REBUILD_PRIORITY)
        def build(**context) -> dict:
            import time

            from jobs.platform.logs import get_logger

            started = time.time()
            with fail_without_retry():
                days = snapshot_days(context, uc)
            log = get_logger(dag_id, ",".join(days) or "-")
            log.info("days to build", days=days, events=event_days(context))
            runs: list[list[str]] = []  # contiguous runs of days are built in one Spark job each
            for day in days:
                if runs and dt.date.fromisoformat(day) - dt.date.fromisoformat(runs[-1][-1]) == dt.timedelta(
                    1
                ):
                    runs[-1].append(day)
                else:
                    runs.append([day])
            for run in runs:
                result = uc.feature_job.build(run[0], run[-1], settings=use_case_settings(uc.name))
                log.info("built", **(result.as_dict() if hasattr(result, "as_dict") else {"result": result}))
            return {"days": days, "started": started}

        @task(task_id="materialize", outlets=[assets.features])
        def materialize(built: dict, **context) -> dict:
            from airflow.sdk.exceptions import AirflowSkipException

            from jobs.platform import feature_store

            days = built["days"]
            if not days:  # woken by an event whose day an earlier run already built
                raise AirflowSkipException("no stale snapshot: nothing to materialize")
            settings = use_case_settings(uc.name)
            feature_store.apply(settings)
            done = feature_store.materialize(days[-1], start=days[0], settings=settings)
            context["outlet_events"][assets.features].extra = {"date": days[-1], "dates": days}
            return {"dates": days, "materialized": done}

        @task.short_circuit(task_id="new_data_since_build", trigger_rule="none_failed")
        def new_data_since_build(built: dict) -> bool:
            """A lake partition written while this run built (its asset event may have been merged into the
            event that started this run, see the DAG doc) gets a run of its own."""
            return bool(uc.feature_job.stale_days(use_case_settings(uc.name), changed_after=built["started"]))

        built = build()
        catch_up = TriggerDagRunOperator(task_id="catch_up", trigger_dag_id=dag_id, conf={}, retries=0)
        materialize(built) >> new_data_since_build(built) >> catch_up

    return build_features_use_case()


# --- train ---------------------------------------------------------------------------------------------
def _run_day(context) -> str:
    """The day a run stands on: its logical date, or the last day of its data interval if later."""
    logical = context.get("logical_date")
    end = context.get("data_interval_end")
    days = [d.date() for d in (logical,) if d is not None]
    if end is not None:
        days.append(end.date() - dt.timedelta(days=1))
    return max(days).isoformat()


def _actor(context) -> str:
    dag_run = context["dag_run"]
    user = getattr(dag_run, "triggering_user_name", None)
    return f"airflow:{dag_run.run_type}" + (f":{user}" if user else "")


def train_model_dag(uc: UseCase, assets: UseCaseAssets) -> DAG:
    dag_id = use_case_dag_id(uc.name, "train_model")
    defaults = TrainParams()  # the job's typed defaults: no literal copied here
    doc = f"""
### Train, evaluate and (maybe) promote the `{uc.name}` model

Weekly (Monday 03:00 UTC), by hand from the UI with the typed params below, or triggered by
`{uc.name}_monitor_and_retrain` with `conf={{"reason": "..."}}` when drift or decay is detected. The tasks
are the job's own steps (`jobs.platform.train`: `train_step`, `gate_step`, `promote_outcome`; the CLI's
`run_pipeline` composes the same three).

1. **train** - the point-in-time correct training set of the training window from the Feast feature
   service (`settings.case.feature_service`), XGBoost (optional time-ordered hyperparameter search), one MLflow
   run (params, metrics, feature service and version, windows, data hash, plots, the model in native
   format with signature); registered as a new version aliased **challenger**.
2. **evaluate_gate** - the challenger and the current champion on the SAME later holdout (at least
   `label_delay_days` after the training window, labels matured), evaluated by the use case; the gate it
   declares decides (primary metric beats the champion by more than `margin`, no guardrail or slice
   regresses beyond tolerance, absolute floors for a first model). A refusal is recorded in the audit log.
3. **promote** - moves the **champion** alias (recorded: version, previous version, metrics, reason, run
   id, time, actor) and emits `{assets.champion.name}`; *skipped* when the gate refused.

Windows: by default the holdout is the `holdout_days` days ending `label_delay_days` before the run's day,
then a `label_delay_days` gap, then `train_days` of training; give `train_start`/`train_end` (and
optionally `holdout_start`/`holdout_end`) to pin them. History and one-step rollback:
`python -m jobs.platform.registry history | rollback --reason ...`.
"""

    @dag(
        dag_id=dag_id,
        schedule=WEEKLY,
        max_active_runs=1,
        **_dag_args(uc),
        doc_md=doc,
        tags=[uc.name, "training"],
        params={
            "reason": Param(
                "scheduled weekly retrain", type="string", description="why this run (audit log)"
            ),
            "train_start": Param(None, type=_DATE, format="date", description="pin the training window"),
            "train_end": Param(None, type=_DATE, format="date", description="pin the training window"),
            "train_days": Param(
                None,
                type=["null", "integer"],
                minimum=1,
                maximum=180,
                description="last N days (default: settings)",
            ),
            "holdout_start": Param(None, type=_DATE, format="date", description="default: after the delay"),
            "holdout_end": Param(None, type=_DATE, format="date", description="default: holdout_days later"),
            "holdout_days": Param(
                None, type=["null", "integer"], minimum=1, maximum=60, description="default: settings"
            ),
            "as_of": Param(None, type=_DATE, format="date", description="default windows end here"),
            "margin": Param(
                None,
                type=["null", "number"],
                minimum=0,
                maximum=1,
                description="primary-metric improvement the gate requires (default: settings)",
            ),
            "max_depth": Param(defaults.max_depth, type="integer", minimum=1, maximum=16),
            "n_estimators": Param(defaults.n_estimators, type="integer", minimum=1, maximum=2000),
            "learning_rate": Param(defaults.learning_rate, type="number", exclusiveMinimum=0, maximum=1),
            "scale_pos_weight": Param(
                defaults.scale_pos_weight,
                type="string",
                enum=["auto", "sqrt", "none"],
                description="imbalance: neg/pos, sqrt, 1",
            ),
            "hpo_trials": Param(0, type="integer", minimum=0, maximum=30, description="0: no search"),
        },
    )
    def train_model_use_case():
        @task(task_id="train")
        def train(**context) -> dict:
            from jobs.platform import train as T

            p = context["params"]
            settings = use_case_settings(uc.name)
            with fail_without_retry():  # bad windows, immature labels, an empty training set
                windows = T.resolve_windows(
                    settings=settings,
                    train_start=p["train_start"],
                    train_end=p["train_end"],
                    holdout_start=p["holdout_start"],
                    holdout_end=p["holdout_end"],
                    as_of=p["as_of"] or _run_day(context),
                    train_days=p["train_days"],
                    holdout_days=p["holdout_days"],
                )
                params = defaults.replace(
                    max_depth=int(p["max_depth"]),
                    n_estimators=int(p["n_estimators"]),
                    learning_rate=float(p["learning_rate"]),
                    scale_pos_weight=str(p["scale_pos_weight"]),
                )
                return T.train_step(
                    windows,
                    params,
                    hpo_trials=int(p["hpo_trials"]),
                    reason=p["reason"],
                    actor=_actor(context),
                    settings=settings,
                )

        @task(task_id="evaluate_gate")
        def evaluate_gate(trained: dict, **context) -> dict:
            from jobs.platform import train as T

            p = context["params"]
            margin = None if p["margin"] is None else float(p["margin"])
            with fail_without_retry():
                return T.gate_step(
                    trained,
                    margin=margin,
                    reason=p["reason"],
                    actor=_actor(context),
                    settings=use_case_settings(uc.name),
                )

        @task(task_id="promote", outlets=[assets.champion], retries=1)
        def promote(outcome: dict, **context) -> dict:
            from airflow.sdk.exceptions import AirflowSkipException

            from jobs.platform import registry
            from jobs.platform import train as T

            if not outcome["promote"]:
                raise AirflowSkipException(f"champion unchanged: {outcome['reason']}")
            settings = use_case_settings(uc.name)
            if registry.champion_version(settings) == outcome["version"]:  # a retry after the alias moved
                entry = next(e for e in reversed(registry.history(settings)) if e["action"] == "promote")
            else:
                entry = T.promote_outcome(
                    outcome, reason=context["params"]["reason"], actor=_actor(context), settings=settings
                )
            context["outlet_events"][assets.champion].extra = {
                "version": entry["version"],
                "previous_version": entry["previous_version"],
                "run_id": entry["run_id"],
            }
            return entry

        promote(evaluate_gate(train()))

    return train_model_use_case()


# --- batch predict ----------------------------------------------------------------------------------------
def batch_predict_dag(uc: UseCase, assets: UseCaseAssets) -> DAG:
    dag_id = use_case_dag_id(uc.name, "batch_predict")
    doc = f"""
### Batch prediction: score day D with the `{uc.name}` champion, write (and publish) `{uc.batch_output}/date=D`

Daily (the run with logical date **D** scores day D once D has ended), backfillable
(`airflow backfill create --dag-id {dag_id} --from-date ... --to-date ...`, or *Trigger DAG* with a logical date).

**Only runs once the day's inputs exist.** The mechanism is a sensor, not an asset schedule: an
asset-triggered DAG cannot be backfilled by date, while a timetable DAG can. `wait_for_features`
(reschedule mode) checks the exact inputs of day D (`jobs.platform.batch_predict.missing_inputs`: the use
case's `scoring_inputs`, i.e. the lake partition of D and the feature tables the point-in-time join reads
for its rows). It fails after {FEATURE_WAIT} if they never appear.

Params: `alias` scores with the `challenger` instead (to compare offline before a promotion); `date`
re-scores a given day from a manual trigger. Output: the task's XCom (`path`, and `published` in
production), the `predictions_written` log line and `{assets.predictions.name}`.
"""

    @dag(
        dag_id=dag_id,
        schedule=DAILY,
        max_active_runs=4,
        **_dag_args(uc),
        doc_md=doc,
        tags=[uc.name, "serving", "batch"],
        params={
            "date": Param(
                None,
                type=_DATE,
                format="date",
                description="score this day (YYYY-MM-DD) instead of the run's data interval (manual re-scoring)",
            ),
            "alias": Param(
                "champion",
                type="string",
                enum=["champion", "challenger"],
                description="registry alias of the model that scores the day",
            ),
        },
    )
    def batch_predict_use_case():
        @task.sensor(task_id="wait_for_features", poke_interval=300, timeout=FEATURE_WAIT, mode="reschedule")
        def wait_for_features(**context) -> bool:
            from jobs.platform.batch_predict import missing_inputs

            date = _day_param(context)
            return nothing_missing(dag_id, date, missing_inputs(date, use_case_settings(uc.name)))

        @task(task_id="score", outlets=[assets.predictions], pool=SPARK_POOL)
        def score(**context) -> dict:
            from jobs.platform.batch_predict import BatchPredictError
            from jobs.platform.batch_predict import run as core_run

            run = uc.batch or core_run  # the use case's own batch job, or per-row scoring
            with fail_without_retry(BatchPredictError):  # e.g. a feature missing, rows lost in the join
                summary = run(
                    _day_param(context), alias=context["params"]["alias"], settings=use_case_settings(uc.name)
                )
            context["outlet_events"][assets.predictions].extra = {
                "date": summary["date"],
                "model_version": summary["model_version"],
                "rows": summary["rows"],
                "uri": summary.get("published", summary["path"]),
            }
            return summary

        wait_for_features() >> score()

    return batch_predict_use_case()


def _threshold_params(th: Thresholds) -> dict[str, Param]:
    """One Param per retrain threshold: its default the use case's setting (``<USE CASE>_RETRAIN_*``),
    its type, bounds and description those of the settings field (``jobs.platform.config.Retrain``)."""
    from jobs.platform.config import Retrain

    params = {}
    for name, field in Retrain.model_fields.items():
        bounds = {}
        for rule in field.metadata:  # annotated_types.Ge / Le of Field(ge=, le=)
            if getattr(rule, "ge", None) is not None:
                bounds["minimum"] = rule.ge
            if getattr(rule, "le", None) is not None:
                bounds["maximum"] = rule.le
        kind = "integer" if field.annotation in (int, "int") else "number"
        params[name] = Param(
            getattr(th, name), type=kind, description=f"retrain: {field.description}", **bounds
        )
    return params


# --- monitor and retrain --------------------------------------------------------------------------------
def monitor_and_retrain_dag(uc: UseCase, assets: UseCaseAssets) -> DAG:
    dag_id = use_case_dag_id(uc.name, "monitor_and_retrain")
    train_id = use_case_dag_id(uc.name, "train_model")
    th, mc = (
        Thresholds.from_settings(use_case_settings(uc.name)),
        MonitorConfig(),
    )  # its section, typed defaults
    doc = f"""
### Monitor the `{uc.name}` champion and retrain on drift

Daily. For the run's day **D** (`jobs.platform.monitor`):

1. **monitor** - Evidently drift of the last `window_days` days against the champion's training reference
   (per-feature drift, share of drifted features, drift of the champion's score) and quality on the rows
   whose labels have matured. Writes `reports/monitoring/date=D/{{report.html,summary.json}}` and logs the
   figures to MLflow under the champion's model version.
2. **decide** - a pure rule over the summary: feature drift share, prediction drift, decay of the
   quality metric vs the champion's live baseline (its first matured week of traffic after its gate
   holdout, kept as the `monitoring.baseline` tag; none until it matures); each cause has a cool-down
   (`cooldown_days`) read from `reports/monitoring/triggers.jsonl`. A drift cause is *deferred*: its retrain is
   due once the default training window holds `post_drift_days` days from the detection (with the label delay,
   `post_drift_days - 1 + 2 x delay + holdout_days` days later), so that the challenger trains, and the gate
   judges it, on traffic after the drift; the deferral is recorded at once and the retrain fires on its due date.
3. **should_retrain** short-circuits the rest on a quiet day.
4. **trigger_train_model** starts `{train_id}` with `conf={{"reason": ...}}` (logical date D, run id
   `retrain__D`, so re-running D does not start a second training), and **record_trigger** appends the
   trigger to the state file.

The weekly retrain is `{train_id}`'s own schedule; this DAG only adds drift-driven runs. Every threshold is
a typed param, so an operator can re-run a day by hand with other thresholds.
"""

    @dag(
        dag_id=dag_id,
        schedule=DAILY,
        max_active_runs=1,
        **_dag_args(uc),
        doc_md=doc,
        tags=[uc.name, "monitoring"],
        params={
            **_threshold_params(th),
            "window_days": Param(
                mc.window_days,
                type="integer",
                minimum=1,
                maximum=60,
                description="days of recent traffic compared with the reference",
            ),
        },
    )
    def monitor_and_retrain_use_case():
        @task(task_id="monitor")
        def monitor(**context) -> dict:
            from jobs.platform.monitor import run_monitoring

            p = context["params"]
            with fail_without_retry():
                summary = run_monitoring(
                    processing_date(context),
                    MonitorConfig(window_days=int(p["window_days"])),
                    drift_share=float(p["drift_share"]),
                    settings=use_case_settings(uc.name),
                )
            drift = summary.get("drift") or {}
            return {  # small XCom; the full summary is in reports/monitoring/date=D/summary.json
                "date": summary["date"],
                "model_version": summary["model_version"],
                "drift_share": drift.get("drift_share"),
                "drifted_features": drift.get("drifted_features"),
                "average_precision": (summary.get("quality") or {}).get("average_precision"),
            }

        @task(task_id="decide")
        def decide(monitored: dict, **context) -> dict:
            from jobs.platform.monitor import decide_for_date

            settings = use_case_settings(uc.name)
            decision = decide_for_date(
                monitored["date"], Thresholds.from_mapping(context["params"]), settings
            )
            if decision.deferred and not decision.retrain:  # a retrain day records itself after triggering
                from jobs.platform.monitor import record_trigger

                record_trigger(StorageLayout(settings), decision)
            return decision.to_dict()

        @task.short_circuit(task_id="should_retrain")
        def should_retrain(decision: dict) -> bool:
            return bool(decision["retrain"])

        @task(task_id="record_trigger")
        def record(decision: dict, **context) -> str:
            from jobs.platform.monitor import Decision, record_trigger

            fields = ("date", "retrain", "causes", "suppressed", "details", "deferred", "awaiting")
            d = Decision(**{k: decision[k] for k in fields if k in decision})
            run_id = context["ti"].xcom_pull(task_ids="trigger_train_model", key="trigger_run_id")
            return str(record_trigger(StorageLayout(use_case_settings(uc.name)), d, run_id=run_id))

        decided = decide(monitor())
        # the run id and logical date come from the day `monitor` processed (one notion of "the day")
        day = "{{ ti.xcom_pull(task_ids='decide')['date'] }}"
        trigger = TriggerDagRunOperator(
            task_id="trigger_train_model",
            trigger_dag_id=train_id,
            trigger_run_id="retrain__" + day,
            logical_date=day,
            conf={"reason": "{{ ti.xcom_pull(task_ids='decide')['reason'] }}"},
            skip_when_already_exists=True,
            retries=0,
        )
        should_retrain(decided) >> trigger >> record(decided)

    return monitor_and_retrain_use_case()
