"""
### Train, evaluate and (maybe) promote the fraud model

Weekly (Monday 03:00 UTC), by hand from the UI with the typed params below, or triggered by
`monitor_and_retrain` with `conf={"reason": "..."}` when drift or decay is detected.

1. **train** (`jobs.platform.train`) — the point-in-time correct training set of the training window from
   the Feast feature service (`fraud_v2`), XGBoost with `scale_pos_weight` for the class
   imbalance (optional time-ordered hyperparameter search), everything logged to one MLflow run
   (params, metrics, feature service and version, windows, row counts, data hash, plots, the
   model in native UBJ format with signature and input example); the model is registered as a
   new version and aliased **challenger**.
2. **evaluate_gate** — the challenger and the current champion are scored on the SAME later
   holdout (at least `label_delay_days` after the training window, labels matured): AUC ROC,
   average precision, card precision@100 per day, the cost-optimal decision threshold (stored as
   the version tag `decision_threshold`) and per-slice metrics. The gate promotes only if average
   precision beats the champion by more than `margin` and no guardrail (AUC, CP@100) or slice
   regresses beyond tolerance; a first model must pass absolute floors. A refusal is recorded in
   the registry audit log.
3. **promote** — moves the **champion** alias (recorded: version, previous version, metrics,
   reason, run id, time, actor) and emits the `champion_model` asset. When the gate refused, this
   task is *skipped*, so the asset is only updated when the champion really changes.

Windows: by default the holdout is the `holdout_days` days ending `label_delay_days` before the
run's day (so its labels are complete), then a `label_delay_days` gap, then `train_days` of
training. Give `train_start`/`train_end` (and optionally `holdout_start`/`holdout_end`) to pin them.
History and one-step rollback: `python -m jobs.platform.registry history | rollback --reason ...`.
"""

from __future__ import annotations

from _common import CHAMPION_MODEL, DEFAULT_ARGS, END_DATE, START_DATE, WEEKLY, fail_without_retry
from airflow.sdk import Param, dag, task

from jobs.platform.params import TrainParams

_P = TrainParams()  # the job's typed defaults (an import-light module): no literal copied here
_DATE = ["null", "string"]


def _run_day(context) -> str:
    """The day a run stands on: its logical date, or the last day of its data interval if later."""
    import datetime as dt

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


@dag(
    dag_id="train_model",
    schedule=WEEKLY,
    start_date=START_DATE,
    end_date=END_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    tags=["fraud", "training"],
    params={
        "reason": Param("scheduled weekly retrain", type="string", description="why this run (audit log)"),
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
        "max_depth": Param(_P.max_depth, type="integer", minimum=1, maximum=16),
        "n_estimators": Param(_P.n_estimators, type="integer", minimum=1, maximum=2000),
        "learning_rate": Param(_P.learning_rate, type="number", exclusiveMinimum=0, maximum=1),
        "scale_pos_weight": Param(
            _P.scale_pos_weight,
            type="string",
            enum=["auto", "sqrt", "none"],
            description="imbalance: neg/pos, sqrt, 1",
        ),
        "hpo_trials": Param(0, type="integer", minimum=0, maximum=30, description="0: no search"),
    },
)
def train_model():
    @task(task_id="train")
    def train(**context) -> dict:
        from jobs.platform import train as T
        from jobs.platform.config import get_settings

        p = context["params"]
        settings = get_settings()
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
        params = _P.replace(
            max_depth=int(p["max_depth"]),
            n_estimators=int(p["n_estimators"]),
            learning_rate=float(p["learning_rate"]),
            scale_pos_weight=str(p["scale_pos_weight"]),
        )
        with fail_without_retry():
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
            return T.gate_step(trained, margin=margin, reason=p["reason"], actor=_actor(context))

    @task(task_id="promote", outlets=[CHAMPION_MODEL], retries=1)
    def promote(outcome: dict, **context) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from jobs.platform import registry
        from jobs.platform import train as T

        if not outcome["promote"]:
            raise AirflowSkipException(f"champion unchanged: {outcome['reason']}")
        if registry.champion_version() == outcome["version"]:  # a retry after the alias moved
            entry = next(e for e in reversed(registry.history()) if e["action"] == "promote")
        else:
            entry = T.promote_outcome(outcome, reason=context["params"]["reason"], actor=_actor(context))
        context["outlet_events"][CHAMPION_MODEL].extra = {
            "version": entry["version"],
            "previous_version": entry["previous_version"],
            "run_id": entry["run_id"],
        }
        return entry

    promote(evaluate_gate(train()))


train_model()
