"""
### Monitor the champion and retrain on drift

Daily. For the run's day **D** (`jobs.platform.monitor`):

1. **monitor** — Evidently drift of the last `window_days` days against the champion's training
   reference (per-feature drift, share of drifted features, drift of the champion's score) and
   quality on the transactions whose labels have matured (AUC, average precision, card
   precision@100). Writes `reports/monitoring/date=D/{report.html,summary.json}` and logs the
   figures to MLflow under the champion's model version.
2. **decide** — a pure rule over the summary: feature drift share, prediction drift, decay of
   average precision vs the champion's holdout baseline; each cause has a cool-down
   (`cooldown_days`) read from `reports/monitoring/triggers.jsonl`.
3. **should_retrain** short-circuits the rest on a quiet day.
4. **trigger_train_model** starts `train_model` with `conf={"reason": ...}` (logical date D, run
   id `retrain__D`, so re-running D does not start a second training), and **record_trigger** appends
   the trigger to the state file.

The weekly retrain is `train_model`'s own schedule; this DAG only adds drift-driven runs. Every
threshold is a typed param, so an operator can re-run a day by hand with other thresholds.
"""

from __future__ import annotations

from _common import DAILY, DEFAULT_ARGS, END_DATE, START_DATE, fail_without_retry, processing_date
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, dag, task

from jobs.platform.params import MonitorConfig, Thresholds

_TH, _MC = Thresholds(), MonitorConfig()  # the job's typed defaults (import-light): no literal copied here


@dag(
    dag_id="monitor_and_retrain",
    schedule=DAILY,
    start_date=START_DATE,
    end_date=END_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    tags=["fraud", "monitoring"],
    params={
        "drift_share": Param(
            _TH.drift_share,
            type="number",
            minimum=0,
            maximum=1,
            description="retrain when at least this share of features drifted",
        ),
        "prediction_drift": Param(
            _TH.prediction_drift,
            type="number",
            minimum=0,
            description="retrain when the score's drift score (Wasserstein, normed) reaches this",
        ),
        "max_ap_drop": Param(
            _TH.max_ap_drop,
            type="number",
            minimum=0,
            maximum=1,
            description="retrain when matured average precision is this much (relative) below the baseline",
        ),
        "min_average_precision": Param(
            _TH.min_average_precision,
            type="number",
            minimum=0,
            maximum=1,
            description="absolute floor for matured average precision (0 = off)",
        ),
        "min_frauds": Param(
            _TH.min_frauds,
            type="integer",
            minimum=1,
            description="judge quality only on at least this many matured frauds",
        ),
        "cooldown_days": Param(
            _TH.cooldown_days,
            type="integer",
            minimum=0,
            description="a cause that triggered is not re-triggered within this many days",
        ),
        "window_days": Param(
            _MC.window_days,
            type="integer",
            minimum=1,
            maximum=60,
            description="days of recent traffic compared with the reference",
        ),
    },
)
def monitor_and_retrain():
    @task(task_id="monitor")
    def monitor(**context) -> dict:
        from jobs.platform.monitor import MonitorConfig, run_monitoring

        p = context["params"]
        with fail_without_retry():
            summary = run_monitoring(
                processing_date(context),
                MonitorConfig(window_days=int(p["window_days"])),
                drift_share=float(p["drift_share"]),
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
        from jobs.platform.monitor import Thresholds, decide_for_date

        decision = decide_for_date(monitored["date"], Thresholds.from_mapping(context["params"]))
        return decision.to_dict()

    @task.short_circuit(task_id="should_retrain")
    def should_retrain(decision: dict) -> bool:
        return bool(decision["retrain"])

    @task(task_id="record_trigger")
    def record(decision: dict, **context) -> str:
        from jobs.platform.monitor import Decision, record_trigger
        from jobs.platform.storage import StorageLayout

        d = Decision(**{k: decision[k] for k in ("date", "retrain", "causes", "suppressed", "details")})
        run_id = context["ti"].xcom_pull(task_ids="trigger_train_model", key="trigger_run_id")
        return str(record_trigger(StorageLayout(), d, run_id=run_id))

    decided = decide(monitor())
    # the run id and logical date come from the day `monitor` processed (one notion of "the day")
    day = "{{ ti.xcom_pull(task_ids='decide')['date'] }}"
    trigger = TriggerDagRunOperator(
        task_id="trigger_train_model",
        trigger_dag_id="train_model",
        trigger_run_id="retrain__" + day,
        logical_date=day,
        conf={"reason": "{{ ti.xcom_pull(task_ids='decide')['reason'] }}"},
        skip_when_already_exists=True,
        retries=0,
    )
    should_retrain(decided) >> trigger >> record(decided)


monitor_and_retrain()
