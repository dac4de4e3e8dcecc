"""Fraud's declaration to the platform core (entry point ``fraud`` of ``ml_platform.use_cases``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from jobs.fraud import schema
from jobs.fraud.settings import FraudSettings
from jobs.platform.use_case import (
    DatasetSpec,
    FeatureJob,
    FeatureSpec,
    Floor,
    GateSpec,
    Guardrail,
    MetricSpec,
    ModelSpec,
    MonitoringSpec,
    PairedBootstrap,
    SliceRule,
    UseCase,
    lazy,
)

if TYPE_CHECKING:
    from jobs.fraud.settings import Gate
    from jobs.platform.config import Settings
    from jobs.platform.evaluate import Evaluation

AUC = MetricSpec("auc_roc")
AP = MetricSpec("average_precision")
CP_AT_100 = MetricSpec("card_precision_at_100")
THRESHOLD_TAG = "decision_threshold"  # the registry's tag serving and batch scoring apply

DATASETS = {
    "transactions": DatasetSpec(
        name="transactions",
        raw_columns=schema.RAW_TRANSACTION_COLUMNS,
        schema=schema.TRANSACTION_SCHEMA,
        key="transaction_id",
        sort_by=("tx_datetime", "transaction_id"),
    ),
    "labels": DatasetSpec(
        name="labels",
        raw_columns=schema.RAW_LABEL_COLUMNS,
        schema=schema.LABEL_SCHEMA,
        key="transaction_id",
        sort_by=("reported_at", "transaction_id"),
    ),
}


def suite_parameters(settings: Settings) -> dict[str, int]:
    """The id ranges the transactions suite accepts (``$PARAMETER`` values of its expectations)."""
    return {
        "max_customer_id": settings.case.max_customer_id,
        "max_terminal_id": settings.case.max_terminal_id,
    }


def gate_spec(policy: Gate) -> GateSpec:
    """AP is primary; AUC ROC and card precision@100 are guardrails; AUC and AP have absolute floors;
    AP may not regress in a slice with at least ``min_slice_frauds`` frauds. The comparisons with
    the champion are paired-bootstrap tests over cards (customers): a compromised card's frauds
    are not independent rows, a card is the unit card precision@100 counts, and the holdout's few
    days are too few units to resample."""
    return GateSpec(
        primary=AP,
        margin=policy.margin,
        guardrails=(
            Guardrail(AUC, policy.guardrail_tolerance),
            Guardrail(CP_AT_100, policy.guardrail_tolerance),
        ),
        floors=(Floor(AUC, policy.min_auc_roc), Floor(AP, policy.min_average_precision)),
        slices=SliceRule(AP, policy.slice_tolerance, support="frauds", min_support=policy.min_slice_frauds),
        bootstrap=PairedBootstrap(
            unit=policy.bootstrap_unit,
            statistics=lazy("jobs.fraud.evaluation:paired_statistics"),
            resamples=policy.resamples,
            alpha=policy.alpha,
        ),
    )


def _version_tags(ev: Evaluation) -> Mapping[str, str]:
    m = ev.metrics
    return {
        THRESHOLD_TAG: repr(ev.threshold.threshold),
        "holdout_window": f"{ev.window[0]}..{ev.window[1]}",
        "holdout_average_precision": f"{m['average_precision']:.6f}",
        "holdout_auc_roc": f"{m['auc_roc']:.6f}",
        "holdout_card_precision_at_100": f"{m['card_precision_at_100']:.6f}",
    }


def _run_params(settings: Settings) -> Mapping[str, float]:
    """Fraud's settings logged with each training run: the costs that choose the threshold."""
    costs = settings.case.costs
    return {"cost_false_positive": costs.false_positive, "cost_false_negative": costs.false_negative}


MODEL = ModelSpec(
    objective="binary:logistic",
    eval_metric="aucpr",
    label="tx_fraud",
    time_column="tx_datetime",
    row_id="transaction_id",
    entity_columns=("customer_id", "terminal_id"),
    positive="fraud",
    decision_rule="fraud if score >= decision_threshold",
    event_dataset="transactions",
    label_dataset="labels",
    run_params=_run_params,
)


def use_case() -> UseCase:
    """Fraud's declaration. Cheap to load (stdlib + the schema): implementations are ``lazy``."""
    return UseCase(
        name="fraud",
        settings=FraudSettings,
        datasets=DATASETS,
        suite_parameters=suite_parameters,
        features=FeatureSpec(
            model_inputs=lazy("jobs.fraud.training_data:model_inputs"),
            request_features=lazy("jobs.fraud.training_data:request_features"),
            defaults=lazy("jobs.fraud.training_data:feature_defaults"),
        ),
        feature_job=FeatureJob(
            build=lazy("jobs.fraud.features:build_features"),
            stale_days=lazy("jobs.fraud.features:stale_days"),
        ),
        training_set=lazy("jobs.fraud.training_data:get_training_set"),
        scoring_frame=lazy("jobs.fraud.training_data:scoring_frame"),
        scoring_inputs=lazy("jobs.fraud.training_data:scoring_inputs"),
        scoring_rows=lazy("jobs.fraud.training_data:scoring_rows"),
        scoring_key="transaction_id",
        gate=lambda settings: gate_spec(settings.case.gate),
        evaluate=lazy("jobs.fraud.evaluation:evaluate"),
        version_tags=_version_tags,
        decision_tag=THRESHOLD_TAG,
        headline_metrics=(
            "auc_roc",
            "average_precision",
            "card_precision_at_100",
            "decision_threshold",
            "rows",
            "frauds",
        ),
        figures=lazy("jobs.fraud.evaluation:evaluation_figures"),
        describe=lazy("jobs.fraud.evaluation:describe"),
        model=MODEL,
        monitoring=MonitoringSpec(
            label="tx_fraud",
            time_column="tx_datetime",
            keys=("transaction_id", "customer_id", "tx_datetime"),
            labels=lazy("jobs.fraud.monitoring:labelled"),
            quality=lazy("jobs.fraud.monitoring:quality"),
            primary="average_precision",
            support="frauds",
        ),
        serving=lazy("jobs.fraud.serving:handler"),
        ab=lazy("jobs.fraud.ab:ab_spec"),
    )
