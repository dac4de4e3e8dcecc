"""Typed defaults of the jobs' tunables, import-light (stdlib only) so DAG files build their Params
from them at parse time instead of copying literals: training hyperparameters
(:class:`TrainParams`, used by :mod:`jobs.platform.train`), monitoring's comparison settings and
retraining thresholds (:class:`MonitorConfig`, :class:`Thresholds`, used by :mod:`jobs.platform.monitor`)
and the A/B analysis (:class:`ABConfig`). The operational thresholds are also settings
(``settings.case.retrain``, ``settings.case.ab``), whose defaults are these.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobs.platform.config import Settings


@dataclass
class TrainParams:
    max_depth: int = 6
    n_estimators: int = 100
    learning_rate: float = 0.3
    min_child_weight: float = 1.0
    subsample: float = 1.0
    colsample_bytree: float = 1.0
    colsample_bynode: float = 1.0  # features drawn per split, as a random forest does (1 = all)
    max_bin: int = 256  # histogram bins per feature (xgboost's default); a sharp cut in a tail needs more
    scale_pos_weight: str = "auto"  # auto = neg/pos | sqrt = sqrt(neg/pos) | none = 1 | a number
    seed: int = 0
    n_jobs: int = 2

    def replace(self, **changes: Any) -> TrainParams:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class MonitorConfig:
    """How the comparison is made (not when to act on it: see :class:`Thresholds`)."""

    window_days: int = 7
    reference_rows: int = 20_000  # seeded sample of the champion's training set
    current_rows: int | None = 100_000  # cap on the current window (seeded sample), None = all
    num_method: str = "wasserstein"  # Evidently stattest for numerical features
    num_threshold: float = 0.1
    cat_method: str = "jensenshannon"  # ... for categorical (binary / low-cardinality) features
    cat_threshold: float = 0.1
    prediction_method: str = "wasserstein"
    prediction_threshold: float = 0.2
    max_categories: int = 10  # an integer feature with at most this many values is categorical
    min_rows: int = 200  # below this the window is reported as insufficient, not as drift
    seed: int = 0


@dataclass(frozen=True)
class Thresholds:
    """When monitoring figures call for retraining."""

    drift_share: float = 0.25  # share of drifted features at or above which data drift is flagged
    prediction_drift: float = 0.2  # score drift (Evidently drift score) at or above which it is flagged
    max_quality_drop: float = 0.3  # relative drop of the primary quality figure vs the baseline
    min_quality: float = 0.0  # absolute floor of the primary quality figure (0 = off)
    min_positives: int = 20  # quality is judged only on at least this many matured positives
    cooldown_days: int = 7  # a cause that triggered is not re-triggered within this many days
    # a drift-caused retrain waits until its training window holds this many days from the drift's
    # detection (and its gate holdout lies wholly after it); 0 = retrain at once on what is labelled
    post_drift_days: int = 7

    @classmethod
    def from_settings(cls, settings: Settings) -> Thresholds:
        """The thresholds of the use case's section, ``settings.case.retrain`` (``FRAUD_RETRAIN_*``)."""
        return cls(**settings.case.retrain.model_dump())

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Thresholds:
        """The thresholds named in ``values`` (e.g. a DAG run's params; the names before use cases,
        ``max_ap_drop``, ``min_average_precision`` and ``min_frauds``, are still read)."""
        known = {f for f in cls.__dataclass_fields__}
        renamed = {_LEGACY_THRESHOLDS.get(k, k): v for k, v in values.items()}
        return cls(**{k: v for k, v in renamed.items() if k in known and v is not None})


_LEGACY_THRESHOLDS = {
    "max_ap_drop": "max_quality_drop",
    "min_average_precision": "min_quality",
    "min_frauds": "min_positives",
}


@dataclass(frozen=True)
class ABConfig:
    """How the A/B analysis plans and decides (:mod:`jobs.platform.ab_analysis`,
    :mod:`jobs.platform.ab_plan`); the decision thresholds come from ``settings.case.ab``
    (``FRAUD_AB_*``) and the widest guardrail tolerance of the use case's champion/challenger gate
    (:meth:`from_settings`)."""

    alpha: float = 0.025  # one-sided: the false-promotion rate of a whole experiment, all looks included
    power: float = 0.8  # planned chance of promoting a challenger better by ``mde``
    mde: float = 0.08  # smallest primary-metric difference worth acting on (the plan is sized for it;
    # a 10 % fraud canary reaches 0.08 AP within max_days: benchmarks.ab_decisions)
    spending: str = "obrien_fleming"  # alpha-spending function of the looks (or "pocock")
    look_every_days: int = 7  # planned spacing of the looks (the spending function allows others)
    max_days: int = 56  # the longest an experiment may run; its last look spends what is left of alpha
    pilot_days: int = 14  # champion traffic before the start that sizes the plan (variance, volume)
    n_boot: int = 1000
    n_boot_costly: int = 500  # for the metrics a use case marks costly per resample (fraud: card precision)
    min_positives: int = 30  # per arm, matured
    guardrail_tolerance: float = 0.02
    max_decision_rate_ratio: float = 1.5
    seed: int = 0
    canary_share: float | None = None  # the configured share of units routed to the challenger
    srm_alpha: float = 0.001  # sample ratio mismatch: chi-square p below this blocks the verdict
    max_contamination: float = 0.01  # share of units logged in both arms above which the verdict is blocked

    @classmethod
    def from_settings(cls, settings: Settings) -> ABConfig:
        from jobs.platform.use_case import get_use_case

        guardrails = get_use_case(settings).gate(settings).guardrails
        tolerance = max((g.tolerance for g in guardrails), default=cls.guardrail_tolerance)
        return cls(
            **settings.case.ab.model_dump(),
            guardrail_tolerance=tolerance,
            canary_share=settings.serving_canary_share,
        )
