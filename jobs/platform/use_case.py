"""The seam between the platform core and a use case.

A use case (``jobs/<name>/``) declares what the core needs from it in one :class:`UseCase` object,
and registers it as an entry point of the group ``ml_platform.use_cases`` in ``pyproject.toml``::

    [project.entry-points."ml_platform.use_cases"]
    fraud = "jobs.fraud.use_case:use_case"

The core finds it by name (``settings.use_case``) through :func:`get_use_case`, so it never imports
a use-case package (``make lint`` checks that with import-linter).

What the core takes from the object today:

* ``gate``: the champion/challenger gate over a declared metric spec (:class:`GateSpec`): the
  primary metric and its margin, guardrails with their tolerances, absolute floors and a per-slice
  rule, each metric with its direction (higher or lower is better);
* ``evaluate``: the offline evaluation of scores on a labelled holdout (the use case's metrics,
  slices and, when it has one, its decision policy, e.g. fraud's cost-optimal threshold);
* ``version_tags``: what a registered version is tagged with after its holdout evaluation, and
  ``decision_tag``: which of those tags holds the decision threshold serving and batch apply (fraud:
  ``decision_threshold``; None: the use case has no decision policy, the registry requires none);
* ``headline_metrics``: the few metrics the audit log and reports show first;
* ``figures`` (optional): the plots logged to MLflow with a holdout evaluation;
* ``describe``: a human-readable evaluation, for the CLIs;
* ``datasets``: what ingestion publishes (:class:`DatasetSpec`), and ``suite_parameters``: the
  settings-derived values its GX suites are evaluated with;
* ``model`` (:class:`ModelSpec`): the model flavour (binary classifier or learning to rank) from its
  objective, the eval metric, the label, the row-time, id, query-group and position columns training
  reads;
* ``monitoring`` (:class:`MonitoringSpec`): the label and how it is joined, the quality figures of
  matured rows and which of them the retrain rule reads;
* ``ab`` (optional): a function returning its :class:`ABSpec`, how the online A/B analysis reads its prediction log (the
  randomisation unit, the label, the primary metric it tests and the guardrails it checks);
* ``companion`` (optional, :class:`Companion`): artifacts fitted with the model and versioned with
  it (ranking: the retrieval index); ``batch`` (optional): the use case's own daily batch job
  (ranking: the top-k recommendations of every active user) writing ``batch_output``, instead of the
  core's per-row scoring;
* ``serving`` (optional): the handler of its real-time API on the serving core
  (:class:`serving.handler.ServingHandler`: routes and schemas, online feature client, response and
  prediction-log records, the canary routing key);
* ``features`` (:class:`FeatureSpec`): model inputs from the feature service, request-time
  features, defaults; ``training_set(start, end, settings)`` the labelled point-in-time frame;
  ``scoring_frame(rows, settings)`` the same features for rows to score in batch,
  ``scoring_inputs(day, layout)`` the partitions a day's batch scoring needs, ``scoring_rows(day,
  settings)`` the rows it scores and ``scoring_key`` the column with one prediction per value (the
  predictions carry a ``decision`` only when the use case has a decision policy, ``decision_tag``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datetime as dt
    from pathlib import Path

    import numpy as np
    import pandas as pd

    from jobs.platform.config import Settings, UseCaseSettings
    from jobs.platform.evaluate import Evaluation
    from jobs.platform.storage import StorageLayout
    from serving.handler import ServingHandler

ENTRY_POINT_GROUP = "ml_platform.use_cases"
DAG_KINDS = ("ingest", "build_features", "train_model", "batch_predict", "monitor_and_retrain")


def dag_id(use_case: str, kind: str) -> str:
    """The id of a use case's DAG of ``kind`` (one of :data:`DAG_KINDS`): ``<use case>_<kind>``."""
    if kind not in DAG_KINDS:
        raise ValueError(f"kind: value {kind!r} is not a DAG kind; rule: one of {list(DAG_KINDS)}")
    return f"{use_case}_{kind}"


def lazy(target: str) -> Callable[..., Any]:
    """``"package.module:function"`` as a callable that imports the module on its first call, so a
    use case's declaration stays cheap to load (DAG files read it while they are parsed) while its
    implementations may pull in pandas, Spark or Feast."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"target: value {target!r} is not 'module:attribute'")
    resolved: list[Callable[..., Any]] = []

    def call(*args: Any, **kwargs: Any) -> Any:
        if not resolved:
            import importlib

            resolved.append(getattr(importlib.import_module(module_name), attribute))
        return resolved[0](*args, **kwargs)

    call.__name__ = call.__qualname__ = attribute
    call.__doc__ = f"{target} (imported on first call)"
    return call


@dataclass(frozen=True)
class MetricSpec:
    """A metric the gate reads from ``Evaluation.metrics``, and which way is better."""

    name: str
    higher_is_better: bool = True

    def beats(self, value: float, bound: float, *, strict: bool = False) -> bool:
        """``value`` is on the good side of ``bound`` (NaN never is)."""
        if math.isnan(value) or math.isnan(bound):
            return False
        if self.higher_is_better:
            return value > bound if strict else value >= bound
        return value < bound if strict else value <= bound

    def rule(self, *, strict: bool = False) -> str:
        return (">" if self.higher_is_better else "<") + ("" if strict else "=")

    def shifted(self, reference: float, amount: float) -> float:
        """``reference`` moved by ``amount`` in the good direction (a margin); a negative ``amount``
        moves it in the bad direction (a tolerance)."""
        return reference + amount if self.higher_is_better else reference - amount


@dataclass(frozen=True)
class Guardrail:
    """The challenger may not be worse than the champion by more than ``tolerance`` (``relative``:
    by more than ``tolerance`` times the champion's value, for metrics whose scale varies, such as
    catalogue coverage)."""

    metric: MetricSpec
    tolerance: float
    relative: bool = False

    def allowed(self, champion_value: float) -> float:
        """The regression allowed from ``champion_value``."""
        return self.tolerance * abs(champion_value) if self.relative else self.tolerance


@dataclass(frozen=True)
class Floor:
    """An absolute bound every champion must meet (the only rule for the very first model)."""

    metric: MetricSpec
    bound: float


@dataclass(frozen=True)
class SliceRule:
    """In every slice of the champion's evaluation whose ``support`` count (e.g. positives) is at
    least ``min_support``, ``metric`` may not regress by more than ``tolerance`` (with a bootstrap:
    no slice may show a regression beyond ``tolerance`` that is significant after Holm's correction
    over the slices tested)."""

    metric: MetricSpec
    tolerance: float
    support: str
    min_support: int


@dataclass(frozen=True)
class PairedBootstrap:
    """How the gate tells a better challenger from noise: ``resamples`` paired bootstraps of the
    holdout by ``unit`` (a column whose values are independent enough: fraud's cards, ranking's users),
    each model's metrics per resample from ``statistics(frame, scores, unit codes, units)`` (a
    :data:`jobs.platform.resampling.Statistics`), every test at level ``alpha`` (one-sided)."""

    unit: str
    statistics: Callable[
        [pd.DataFrame, np.ndarray, np.ndarray, int], Callable[[np.ndarray], Mapping[str, np.ndarray]]
    ]
    resamples: int = 1000
    alpha: float = 0.025
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 0.5:
            raise ValueError(f"bootstrap.alpha: value {self.alpha} is invalid; rule: 0 < alpha < 0.5")
        if self.resamples < 100:
            raise ValueError(
                f"bootstrap.resamples: value {self.resamples} is too few; rule: at least 100 for a tail quantile"
            )


@dataclass(frozen=True)
class GateSpec:
    """The champion/challenger gate: the primary metric must beat the champion by ``margin``.

    With ``bootstrap`` the comparisons with the champion are tests on paired resamples of the
    holdout (:func:`jobs.platform.evaluate.gate`); without it they compare point estimates."""

    primary: MetricSpec
    margin: float = 0.0
    guardrails: tuple[Guardrail, ...] = ()
    floors: tuple[Floor, ...] = ()
    slices: SliceRule | None = None
    bootstrap: PairedBootstrap | None = None

    def with_margin(self, margin: float) -> GateSpec:
        from dataclasses import replace

        return replace(self, margin=margin)


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset ingestion publishes (landing CSV -> typed lake parquet, or quarantine): the raw
    header, the lake schema (column -> Spark SQL type), the key rows are de-duplicated on, the sort
    order of the lake file and the GX suite (``expectations/<use case>/<suite>.json``). Its storage
    names follow from its name (:mod:`jobs.platform.storage`)."""

    name: str
    raw_columns: tuple[str, ...]
    schema: dict[str, str]
    key: str
    sort_by: tuple[str, ...]
    suite: str = ""

    @property
    def suite_name(self) -> str:
        return self.suite or self.name

    @property
    def landing(self) -> str:
        return f"landing_{self.name}"

    @property
    def lake(self) -> str:
        return self.name

    @property
    def quarantine(self) -> str:
        return f"quarantine_{self.name}"


@dataclass(frozen=True)
class FeatureSpec:
    """How a use case's model inputs are assembled around its Feast feature service: the input
    columns a registered service implies, the request-time features (one function for training,
    batch and serving) and the value of a store feature with no row."""

    model_inputs: Callable[[Any], list[str]]
    request_features: Callable[[pd.DataFrame], pd.DataFrame]
    defaults: Callable[[], Mapping[str, float]]


@dataclass(frozen=True)
class FeatureJob:
    """The use case's offline feature job: ``build(start, end, settings)`` writes the feature tables of
    snapshot days ``start..end``; ``stale_days(settings, changed_after)`` lists the days whose tables
    are missing or out of date with the lake (only those whose inputs changed after the epoch
    ``changed_after`` when given). The ``<use case>_build_features`` DAG runs them."""

    build: Callable[..., Any]
    stale_days: Callable[..., list[dt.date]]


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """The model the core trains (:mod:`jobs.platform.train`): xgboost with ``objective`` and
    ``eval_metric``, logged in its native format through MLflow, on the label column; the row-time
    column orders the validation split, ``row_id`` the data fingerprint; ``entity_columns`` are
    counted per training run (``train_<entity>s``), positives as ``train_<positive>s``;
    ``run_params(settings)`` are the use case's own settings logged with each run.

    Two flavours, from the objective:

    * ``binary:*`` - ``xgboost.XGBClassifier``, one probability per row (fraud), with class
      re-weighting (``scale_pos_weight``);
    * ``rank:*`` - ``xgboost.XGBRanker`` (learning to rank, e.g. ``rank:ndcg``): ``group`` is the
      query column (one request's candidates), the label a graded relevance; rows are ordered by
      group and then ``position`` (the logged slot, which xgboost's position debiasing,
      ``lambdarank_unbiased``, reads from the row order within a query).

    ``xgb_params`` are further xgboost parameters the use case fixes (e.g. ``lambdarank_pair_method``,
    ``lambdarank_num_pair_per_sample``, ``lambdarank_unbiased``).

    ``event_dataset`` is the ingested dataset whose rows are modelled (fraud: transactions; ranking:
    impressions; its first partition bounds the default training window) and ``label_dataset`` the one
    whose arrival matures the labels (fraud: chargeback reports; ranking: clicks): a day's labels are
    complete once its partition of ``label_delay_days`` later has been ingested."""

    objective: str
    eval_metric: str
    label: str
    time_column: str
    row_id: str
    entity_columns: tuple[str, ...] = ()
    positive: str = "positive"
    decision_rule: str = ""
    group: str | None = None
    position: str | None = None
    xgb_params: Mapping[str, Any] = field(default_factory=dict)
    event_dataset: str = ""
    label_dataset: str = ""
    run_params: Callable[[Settings], Mapping[str, Any]] = lambda settings: {}

    def __post_init__(self) -> None:
        if not self.objective.startswith(("binary:", "rank:")):
            raise ValueError(
                f"model.objective: value {self.objective!r} is not trained by the core; rule: a binary:* "
                "objective (XGBClassifier) or a rank:* objective (XGBRanker)"
            )
        if self.ranker and not self.group:
            raise ValueError(
                f"model.group: missing for objective {self.objective!r}; rule: a learning-to-rank model "
                "needs the query-group column"
            )
        if not self.ranker and (self.group or self.position):
            raise ValueError(
                f"model.group: set for objective {self.objective!r}; rule: only rank:* objectives have groups"
            )

    @property
    def ranker(self) -> bool:
        """A learning-to-rank model (``rank:*``), scored per group rather than per row."""
        return self.objective.startswith("rank:")


@dataclass(frozen=True, kw_only=True)
class MonitoringSpec:
    """How monitoring (:mod:`jobs.platform.monitor`) judges a use case's champion on matured labels:
    the label column and the row-time column (whose day places a row in a window), the id columns
    kept with the training reference, ``labels(frame, layout, start, as_of)`` (the rows with their
    label as known at the end of ``as_of``), ``quality(frame, scores)`` (the figures of labelled rows
    and the champion's scores), the figure the decay rule reads (``primary``, higher is better) and
    the one that counts the positives it needs (``support``, judged from ``min_positives``)."""

    label: str
    time_column: str
    keys: tuple[str, ...]
    labels: Callable[..., pd.DataFrame]
    quality: Callable[[pd.DataFrame, np.ndarray], Mapping[str, Any]]
    primary: str
    support: str


@dataclass(frozen=True)
class ABMetric:
    """A figure of one arm of an online A/B test, ``stat(sample)`` on a (resampled) arm
    (:class:`jobs.platform.ab_analysis.ArmSample`: labels, scores, decisions, days, units);
    ``costly`` metrics get fewer bootstrap resamples (``ABConfig.n_boot_costly``).

    ``weighted`` (optional, for speed): ``weighted(arm) -> f`` where ``f(counts)`` gives the metric for
    a batch of unit-count vectors ``(b, units)`` at once (a row weighs its unit's count; the arm's
    units in :class:`~jobs.platform.ab_analysis.Clusters` order), equal to ``stat`` of the resampled
    arm (:func:`jobs.platform.ab_analysis.weighted_binary` builds AP and AUC ROC this way)."""

    name: str
    stat: Callable[[Any], float]
    higher_is_better: bool = True
    costly: bool = False
    weighted: Callable[[Any], Callable[[Any], Any]] | None = None


@dataclass(frozen=True)
class ABGuardrail:
    """A figure the challenger's arm may not break: ``tolerance`` - not worse than the champion's by
    more than ``ABConfig.guardrail_tolerance``; ``ratio`` - not above ``ABConfig.max_decision_rate_ratio``
    times the champion's (a rate that should not explode, e.g. alerts).

    ``test`` says what the bootstrap interval must show (one-sided ``alpha`` each side):
    ``non_inferiority`` - promotion needs the interval to rule the breach out (the default; the
    experiment must be large enough to show it); ``deterioration`` - only a breach the interval shows
    (wholly beyond the limit) refuses, for a figure too noisy at the primary's sample size to be
    shown non-inferior (fraud's card precision@k of a 10 % canary).

    ``tolerance`` (rule ``tolerance`` only): this guardrail's own limit instead of
    ``ABConfig.guardrail_tolerance`` (figures on different scales: ranking's intra-list diversity and
    freshness shares)."""

    metric: ABMetric
    rule: str = "tolerance"
    test: str = "non_inferiority"
    tolerance: float | None = None

    def __post_init__(self) -> None:
        if self.rule not in ("tolerance", "ratio"):
            raise ValueError(f"guardrail.rule: value {self.rule!r} is invalid; rule: tolerance | ratio")
        if self.test not in ("non_inferiority", "deterioration"):
            raise ValueError(
                f"guardrail.test: value {self.test!r} is invalid; rule: non_inferiority | deterioration"
            )
        if self.tolerance is not None and (self.rule != "tolerance" or self.tolerance < 0):
            raise ValueError(
                f"guardrail.tolerance: value {self.tolerance!r} is invalid; rule: a non-negative limit of a "
                "'tolerance' guardrail"
            )


@dataclass(frozen=True, kw_only=True)
class ABSpec:
    """How the online A/B analysis (:mod:`jobs.platform.ab_analysis`) reads a use case's prediction
    log: the columns it needs, the randomisation ``unit`` (the canary key: whole units are
    resampled), the ``row_id`` that pairs a shadow arm's rows with the champion's, the label (joined
    by ``MonitoringSpec.labels``) and the row-time column; the ``primary`` metric is tested (its z
    against the look's sequential boundary), the guardrails by their bootstrap intervals; ``support``
    names the count of positives an arm needs (``ABConfig.min_positives``) and the plan's information;
    ``secondary`` metrics are reported with their intervals and difference but decide nothing;
    ``arm_details(sample)`` adds figures to an arm's report and ``truth(champion, challenger)`` (the
    two arms' reports) what is known beyond the log, e.g. a simulated world's true effect, to check
    the verdict against (None: nothing)."""

    log_columns: tuple[str, ...]
    unit: str
    row_id: str
    label: str
    time_column: str
    primary: ABMetric
    guardrails: tuple[ABGuardrail, ...] = ()
    secondary: tuple[ABMetric, ...] = ()
    support: str = "positives"
    decision: str | None = None
    arm_details: Callable[[Any], Mapping[str, Any]] = lambda sample: {}
    truth: Callable[[Mapping[str, Any], Mapping[str, Any]], Mapping[str, Any]] | None = None


@dataclass(frozen=True)
class Companion:
    """Artifacts fitted beside the model on its training window and versioned with it, so they move
    with the champion alias as one bundle (ranking: the retrieval stage, ALS factors and the faiss
    index, and the pre-ranker). ``fit(train_df, windows, settings, folder)`` writes them into
    ``folder`` and returns figures to log; training logs the folder to the model's MLflow run under
    ``artifact_path`` (:func:`jobs.platform.registry.companion_dir` downloads a version's)."""

    fit: Callable[..., Mapping[str, float]]
    artifact_path: str = "companion"


EvaluateFn = Callable[..., "Evaluation"]
"""``evaluate(frame, scores, *, settings, model_version=None, threshold=None) -> Evaluation``;
``threshold``: the decision threshold fitted on the model's validation window (the frame's own
cost-optimal choice when None), for use cases with a decision policy."""


@dataclass(frozen=True, kw_only=True)
class UseCase:
    """What the platform core needs from a use case (see the module docstring)."""

    name: str
    # its settings section (a UseCaseSettings subclass with its own env prefix): settings.case
    settings: type[UseCaseSettings]
    # data: what ingestion publishes and how features become model inputs
    datasets: Mapping[str, DatasetSpec]
    features: FeatureSpec
    feature_job: FeatureJob
    training_set: Callable[[dt.date, dt.date, Settings], pd.DataFrame]
    scoring_frame: Callable[[pd.DataFrame, Settings], pd.DataFrame]
    scoring_inputs: Callable[[dt.date, StorageLayout], list[Path]]
    # batch scoring: the day's rows (one per key value; FileNotFoundError if not ingested) and the key
    scoring_rows: Callable[[dt.date, Settings], pd.DataFrame]
    scoring_key: str
    suite_parameters: Callable[[Settings], Mapping[str, Any]] = lambda settings: {}
    # evaluation and the gate
    gate: Callable[[Settings], GateSpec]
    evaluate: EvaluateFn
    version_tags: Callable[[Evaluation], Mapping[str, str]]
    headline_metrics: tuple[str, ...]
    decision_tag: str | None = None
    figures: Callable[[pd.DataFrame, np.ndarray, Evaluation], Mapping[str, Any]] | None = None
    describe: Callable[[Evaluation], str] = repr
    # the model the core trains
    model: ModelSpec
    # monitoring on matured labels (quality figures, the label join)
    monitoring: MonitoringSpec
    # real-time serving: the handler of its API on the serving core (None: no online API)
    serving: Callable[[], ServingHandler] | None = None
    # the online A/B analysis of a canary or shadow period, ``ab(settings)`` (a loader, e.g.
    # ``lazy(...)``; None: none)
    ab: Callable[[Settings], ABSpec] | None = None
    # artifacts trained and versioned with the model (None: the model alone)
    companion: Companion | None = None
    # the daily batch job (None: the core's per-row scoring, jobs.platform.batch_predict.run) and the
    # dataset it writes (``<batch_output>/date=D``)
    batch: Callable[..., Mapping[str, Any]] | None = None
    batch_output: str = "predictions"

    def dataset(self, name: str) -> DatasetSpec:
        """The ingested dataset ``name`` (ValueError naming the known ones otherwise)."""
        if name not in self.datasets:
            raise ValueError(
                f"dataset: value {name!r} is not a dataset of use case {self.name!r}; "
                f"rule: one of {sorted(self.datasets)}"
            )
        return self.datasets[name]

    def headline(self, evaluation: Evaluation) -> dict[str, float]:
        return {k: float(evaluation.metrics[k]) for k in self.headline_metrics if k in evaluation.metrics}


def available_use_cases() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))


@cache
def _load(name: str) -> UseCase:
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not found:
        raise ValueError(
            f"use_case: value {name!r} is not a registered use case (entry points of group "
            f"{ENTRY_POINT_GROUP!r}: {available_use_cases() or 'none'}); rule: declare it in pyproject.toml "
            "[project.entry-points] and reinstall (`make install`)"
        )
    obj: Any = found[0].load()
    use_case = obj() if callable(obj) and not isinstance(obj, UseCase) else obj
    if not isinstance(use_case, UseCase):
        raise TypeError(
            f"use_case: entry point {found[0].value} gave {type(use_case).__name__}, not a UseCase"
        )
    if use_case.name != name:
        raise ValueError(f"use_case: entry point {name!r} declares a use case named {use_case.name!r}")
    return use_case


def get_use_case(settings: Settings | None = None, name: str | None = None) -> UseCase:
    """The use case ``name`` (default: ``settings.use_case``), loaded once per process."""
    if name is None:
        if settings is None:
            raise TypeError("get_use_case: pass the settings or the name of the use case")
        name = settings.use_case
    return _load(name)
