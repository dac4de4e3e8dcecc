"""The ranking use case's declaration to the platform core (entry point ``ranking`` of
``ml_platform.use_cases``): an e-commerce home feed whose ranker learns to rank logged slates."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from jobs.platform.use_case import (
    Companion,
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
from jobs.ranking.datasets import DATASETS, suite_parameters
from jobs.ranking.settings import RankingSettings

if TYPE_CHECKING:
    from jobs.platform.config import Settings
    from jobs.ranking.settings import Gate

NDCG = MetricSpec("ndcg_at_10")
MRR = MetricSpec("mrr")


def gate_spec(policy: Gate) -> GateSpec:
    """NDCG@10 on the holdout's logged clicks is primary; guardrails MRR and the funnel's slates'
    intra-list diversity (absolute) and catalogue coverage (relative); NDCG@10 has an absolute floor
    and may not regress in a slice (new/returning users, device, cold/warm items) with enough clicks.
    NDCG@10, MRR and the slices are tested on paired bootstraps of the holdout's users; the funnel's
    diversity and coverage (one sample of slates) keep the point rule."""
    return GateSpec(
        primary=NDCG,
        margin=policy.margin,
        guardrails=(
            Guardrail(MRR, policy.guardrail_tolerance),
            Guardrail(MetricSpec("diversity"), policy.diversity_tolerance),
            Guardrail(MetricSpec("coverage"), policy.coverage_tolerance, relative=True),
        ),
        floors=(Floor(NDCG, policy.min_ndcg_at_10),),
        slices=SliceRule(NDCG, policy.slice_tolerance, support="clicks", min_support=policy.min_slice_clicks),
        bootstrap=PairedBootstrap(
            unit="user_id",
            statistics=lazy("jobs.ranking.evaluation:paired_statistics"),
            resamples=policy.resamples,
            alpha=policy.alpha,
        ),
    )


def _run_params(settings: Settings) -> Mapping[str, object]:
    """The world the ranker was trained on (its seed and size), logged with each run."""
    w = settings.case.world
    return {"world_seed": w.seed, "world_users": w.n_users, "world_items": w.n_items, "world_scale": w.scale}


MODEL = ModelSpec(
    objective="rank:ndcg",
    eval_metric="ndcg@10",
    label="clicked",
    time_column="shown_at",
    row_id="impression_id",
    entity_columns=("user_id", "item_id"),
    positive="click",
    group="request_id",
    position="slot",
    event_dataset="impressions",
    label_dataset="clicks",
    # position debiasing of the logged clicks: the slate's rows are ordered by slot and xgboost's
    # unbiased LambdaMART estimates the examination propensity of each position jointly with the
    # ranker (Hu et al. 2019), so no click model has to be assumed; top-k pairs as it recommends
    xgb_params={
        "lambdarank_unbiased": True,
        "lambdarank_pair_method": "topk",
        "lambdarank_num_pair_per_sample": 10,
    },
    run_params=_run_params,
)


def use_case() -> UseCase:
    """Ranking's declaration. Cheap to load: implementations are ``lazy``."""
    return UseCase(
        name="ranking",
        settings=RankingSettings,
        datasets=DATASETS,
        suite_parameters=suite_parameters,
        features=FeatureSpec(
            model_inputs=lazy("jobs.ranking.training_data:model_inputs"),
            request_features=lazy("jobs.ranking.training_data:request_features"),
            defaults=lazy("jobs.ranking.training_data:feature_defaults"),
        ),
        feature_job=FeatureJob(
            build=lazy("jobs.ranking.features:build_features"),
            stale_days=lazy("jobs.ranking.features:stale_days"),
        ),
        training_set=lazy("jobs.ranking.training_data:get_training_set"),
        scoring_frame=lazy("jobs.ranking.training_data:scoring_frame"),
        scoring_inputs=lazy("jobs.ranking.training_data:scoring_inputs"),
        scoring_rows=lazy("jobs.ranking.training_data:scoring_rows"),
        scoring_key="impression_id",
        gate=lambda settings: gate_spec(settings.case.gate),
        evaluate=lazy("jobs.ranking.evaluation:evaluate"),
        version_tags=lazy("jobs.ranking.evaluation:version_tags"),
        headline_metrics=(
            "ndcg_at_10",
            "mrr",
            "logged_ndcg_at_10",
            "coverage",
            "diversity",
            "requests",
            "clicks",
        ),
        describe=lazy("jobs.ranking.evaluation:describe"),
        model=MODEL,
        monitoring=MonitoringSpec(
            label="clicked",
            time_column="shown_at",
            keys=("impression_id", "request_id", "user_id", "item_id", "slot"),
            labels=lazy("jobs.ranking.evaluation:labelled"),
            quality=lazy("jobs.ranking.evaluation:quality"),
            primary="ndcg_at_10",
            support="clicks",
        ),
        companion=Companion(fit=lazy("jobs.ranking.funnel:fit_companion")),
        batch=lazy("jobs.ranking.funnel:recommend"),
        batch_output="recommendations",
        serving=lazy("jobs.ranking.serving:handler"),
        ab=lazy("jobs.ranking.ab:ab_spec"),
    )
