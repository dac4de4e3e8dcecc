"""Daily model monitoring: data drift, prediction drift and quality on matured labels.

For a logical date ``D`` the job compares the last ``window_days`` days (``D - window + 1 .. D``)
with the **training reference** of the current champion (a seeded sample of its training set,
scored by the champion):

* **feature drift**: one Evidently ``ValueDrift`` per model feature (Wasserstein distance normed by
  the reference std for numerical features, Jensen-Shannon distance for binary/low-cardinality
  ones) and ``DriftedColumnsCount`` for the share of drifted features;
* **prediction drift**: ``ValueDrift`` of the champion's score;
* **quality**: the use case's figures (``UseCase.monitoring``; fraud: AUC ROC, average precision and
  card precision@100) on the rows whose labels have *matured* by the end of ``D`` (days
  ``D - label_delay - window + 1 .. D - label_delay``, never days the champion was trained or
  selected on: the window starts after its gate holdout), with labels as known at the end of ``D``;
  the decay rule reads the declared ``primary`` figure against the champion's **live baseline**.

The live baseline (:func:`baseline_window`) is the champion's quality on its first full window of
live traffic after its holdout, with the labels known when that window matured; it is computed once
and kept as the model version's ``monitoring.baseline`` tag. It is not the gate holdout's figure: that
holdout is the one the champion won on (selection biases it upward, so a baseline from it reads
ordinary noise as decay), and right after a promotion the monitor's quality window would be that same
holdout. Until the live baseline has matured the decay rule is off (the absolute floor still applies)
and the summary says when it will be known.

Outputs (one partition per date, committed atomically)::

    reports/monitoring/date=D/report.html     the Evidently report (drift tables and distributions)
    reports/monitoring/date=D/summary.json    the figures the retraining trigger reads

and an MLflow run (experiment ``<model_name>-monitoring``) tagged with the champion's model version,
whose metrics are also linked to the champion's logged model; the model version gets
``monitoring.*`` tags with the latest figures.

The retraining trigger is :func:`decide`, a pure function of a summary, thresholds and the last
trigger date of each cause (cool-down); its state lives in ``reports/monitoring/triggers.jsonl``.

CLI::

    python -m jobs.platform.monitor --date 2018-05-20            # monitor one day, print the summary
    python -m jobs.platform.monitor --date 2018-05-20 --decide   # ... and print the retraining decision
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jobs.platform.config import Settings, get_settings
from jobs.platform.logs import get_logger
from jobs.platform.metrics import finite_or_none
from jobs.platform.params import MonitorConfig, Thresholds
from jobs.platform.storage import StorageLayout, as_date, staged_directory, staged_file
from jobs.platform.use_case import MonitoringSpec, get_use_case

REPORT_KIND = "monitoring"
SCORE = "score"
CAUSES = ("feature_drift", "prediction_drift", "quality_decay")


@dataclass
class Decision:
    date: str
    retrain: bool
    causes: list[str] = field(default_factory=list)  # causes that fire and are not cooling down
    suppressed: list[str] = field(default_factory=list)  # causes that fire but are in cool-down
    details: dict[str, str] = field(default_factory=dict)
    deferred: dict[str, str] = field(default_factory=dict)  # drift detected today: cause -> retrain due date
    awaiting: dict[str, str] = field(
        default_factory=dict
    )  # fires, a deferred retrain is pending: cause -> due

    @property
    def reason(self) -> str:
        """The human-readable reason passed to the train DAG (``<use case>_train_model``) in its conf."""
        if not self.causes:
            return ""
        parts = [f"{c}: {self.details[c]}" for c in self.causes]
        return f"monitoring {self.date}: " + "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reason": self.reason}


# --- column typing -----------------------------------------------------------------------
def split_column_types(
    reference: pd.DataFrame, columns: Sequence[str], max_categories: int = 10
) -> tuple[list[str], list[str]]:
    """(numerical, categorical): bool/object columns and integer columns with few values are categorical."""
    numerical, categorical = [], []
    for col in columns:
        s = reference[col]
        is_cat = (
            pd.api.types.is_bool_dtype(s)
            or pd.api.types.is_object_dtype(s)
            or isinstance(s.dtype, pd.CategoricalDtype)
            or (pd.api.types.is_integer_dtype(s) and s.nunique(dropna=True) <= max_categories)
            or (
                pd.api.types.is_float_dtype(s)
                and s.nunique(dropna=True) <= 2
                and set(s.dropna().unique()) <= {0.0, 1.0}
            )
        )
        (categorical if is_cat else numerical).append(col)
    return numerical, categorical


def _sample(df: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    if n is None or len(df) <= n:
        return df
    return df.sample(n=n, random_state=seed)


# --- drift (Evidently) ------------------------------------------------------------------
def build_drift_report(
    features: Sequence[str],
    numerical: Sequence[str],
    score_column: str | None,
    cfg: MonitorConfig,
    drift_share: float = 0.5,
):
    """The configured Evidently report: drifted-feature count + one ValueDrift per feature and the score."""
    from evidently import Report
    from evidently.metrics import DriftedColumnsCount, ValueDrift

    methods = {c: (cfg.num_method if c in numerical else cfg.cat_method) for c in features}
    thresholds = {c: (cfg.num_threshold if c in numerical else cfg.cat_threshold) for c in features}
    metrics: list = [
        DriftedColumnsCount(
            columns=list(features),
            drift_share=drift_share,
            per_column_method=methods,
            per_column_threshold=thresholds,
        )
    ]
    metrics += [ValueDrift(column=c, method=methods[c], threshold=thresholds[c]) for c in features]
    if score_column is not None:
        metrics.append(
            ValueDrift(column=score_column, method=cfg.prediction_method, threshold=cfg.prediction_threshold)
        )
    return Report(metrics, include_tests=True)


def compute_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    features: Sequence[str],
    cfg: MonitorConfig | None = None,
    score_column: str | None = SCORE,
    drift_share: float = 0.5,
) -> tuple[dict[str, Any], Any]:
    """Run the drift report; returns (figures, Evidently snapshot).

    figures = {"features": {col: {method, threshold, score, drifted}}, "n_drifted", "drift_share",
    "prediction": {...} or None, "n_reference", "n_current"}. A column is drifted when Evidently's
    per-column drift test fails (score >= threshold for distances, p < threshold for tests)."""
    from evidently import DataDefinition, Dataset

    cfg = cfg or MonitorConfig()
    features = list(features)
    missing = [c for c in features if c not in reference.columns or c not in current.columns]
    if missing:
        raise ValueError(
            f"drift: feature column(s) {missing} missing; rule: reference and current need all features"
        )
    numerical, categorical = split_column_types(reference, features, cfg.max_categories)
    use_score = score_column is not None and score_column in reference and score_column in current
    cols = features + ([score_column] if use_score else [])
    num_all = numerical + ([score_column] if use_score else [])
    definition = DataDefinition(numerical_columns=num_all, categorical_columns=categorical)
    ref = Dataset.from_pandas(reference[cols].reset_index(drop=True), data_definition=definition)
    cur = Dataset.from_pandas(current[cols].reset_index(drop=True), data_definition=definition)
    report = build_drift_report(features, numerical, score_column if use_score else None, cfg, drift_share)
    snapshot = report.run(cur, ref)
    return parse_drift_snapshot(snapshot, features, score_column if use_score else None) | {
        "n_reference": int(len(reference)),
        "n_current": int(len(current)),
        "numerical": numerical,
        "categorical": categorical,
    }, snapshot


def parse_drift_snapshot(snapshot, features: Sequence[str], score_column: str | None) -> dict[str, Any]:
    """Per-column scores from the metrics, drift flags from the per-column drift tests."""
    out = snapshot.dict()
    values: dict[str, dict[str, Any]] = {}
    count = share = None
    for m in out["metrics"]:
        cfg = m.get("config", {})
        kind = cfg.get("type", "")
        if kind.endswith(":ValueDrift"):
            values[cfg["column"]] = {
                "method": cfg.get("method"),
                "threshold": cfg.get("threshold"),
                "score": finite_or_none(m["value"]),
            }
        elif kind.endswith(":DriftedColumnsCount"):
            count, share = m["value"]["count"], m["value"]["share"]
    for t in out["tests"]:
        params = t.get("metric_config", {}).get("params", {})
        if params.get("type", "").endswith(":ValueDrift") and params.get("column") in values:
            values[params["column"]]["drifted"] = t["status"] == "FAIL"
    feats = {c: values[c] for c in features}
    for c, v in feats.items():
        if "drifted" not in v:
            raise RuntimeError(f"drift: no drift test result for column {c!r}")
    n_drifted = sum(v["drifted"] for v in feats.values())
    if count is not None and int(count) != n_drifted:
        raise RuntimeError(
            f"drift: DriftedColumnsCount={count} disagrees with per-column tests ({n_drifted})"
        )
    return {
        "features": feats,
        "n_features": len(feats),
        "n_drifted": int(n_drifted),
        "drift_share": float(share if share is not None else n_drifted / max(len(feats), 1)),
        "drifted_features": sorted(c for c, v in feats.items() if v["drifted"]),
        "prediction": values.get(score_column) if score_column else None,
    }


# --- quality on matured labels (the figures are the use case's: UseCase.monitoring) ----------
def matured_window(date: dt.date, window_days: int, label_delay_days: int) -> tuple[dt.date, dt.date]:
    """Days whose labels are complete at the end of ``date``: a day T is matured when T + delay <= date."""
    end = date - dt.timedelta(days=label_delay_days)
    return end - dt.timedelta(days=window_days - 1), end


# --- summary ---------------------------------------------------------------------------
def summarize(
    date: dt.date,
    drift: Mapping[str, Any] | None,
    quality: Mapping[str, Any] | None,
    *,
    model_version: str | None,
    window: tuple[dt.date, dt.date],
    quality_window: tuple[dt.date, dt.date] | None,
    baseline: Mapping[str, Any] | None = None,
    holdout: Mapping[str, Any] | None = None,
    notes: Iterable[str] = (),
) -> dict[str, Any]:
    """The day's monitoring summary: ``baseline`` is what the decay rule compares with (the live
    baseline: its figures, ``window`` and ``source``), ``holdout`` the champion's gate-holdout
    figures (reported, never compared with)."""
    return {
        "date": date.isoformat(),
        "model_version": model_version,
        "window": {"start": window[0].isoformat(), "end": window[1].isoformat()},
        "drift": dict(drift) if drift else None,
        "quality_window": (
            {"start": quality_window[0].isoformat(), "end": quality_window[1].isoformat()}
            if quality_window
            else None
        ),
        "quality": dict(quality) if quality else None,
        "baseline": dict(baseline) if baseline else None,
        "holdout": dict(holdout) if holdout else None,
        "notes": list(notes),
    }


# --- the retraining decision (pure) ---------------------------------------------------------
DRIFT_CAUSES = ("feature_drift", "prediction_drift")


def drift_retrain_due(
    detected: dt.date, post_drift_days: int, label_delay_days: int, holdout_days: int
) -> dt.date:
    """The first logical date whose default training windows (:func:`jobs.platform.evaluate.default_windows`:
    holdout ending ``label_delay`` days back, a ``label_delay`` gap, training before it) train through
    ``post_drift_days`` days from ``detected``, so that the gate holdout lies wholly after them; the
    detection day itself when ``post_drift_days`` is 0.

    Retraining at the detection instead trains and gates on days before the drift: with a 7-day label
    delay and a 7-day holdout the newest labelled training day is 15 days old."""
    if post_drift_days <= 0:
        return detected
    return detected + dt.timedelta(days=post_drift_days - 1 + 2 * label_delay_days + holdout_days)


def decide(
    summary: Mapping[str, Any],
    thresholds: Thresholds,
    last_triggers: Mapping[str, str | dt.date],
    pending: Mapping[str, Mapping[str, str]] | None = None,
    due: Callable[[dt.date], dt.date] | None = None,
) -> Decision:
    """Which causes call for retraining on the summary's date, honouring a per-cause cool-down and
    deferring drift-caused retrains until their training data holds days after the drift.

    ``last_triggers`` maps a cause to the date it last triggered a retrain (strictly before the
    summary's date, so re-running a day gives the same answer). A cause that fires within
    ``cooldown_days`` of its last trigger is reported as suppressed. A drift cause (feature or
    prediction drift) that fires is *deferred* when ``due`` (detection day -> the date its retrain
    is due, :func:`drift_retrain_due`) lies after today: the decision records the due date, and
    the retrain fires on that date from ``pending`` (cause -> ``{"detected", "due", "detail"}``, the
    deferrals recorded before today) whether or not the drift is still seen; while it is pending the
    cause is reported as awaiting. Quality decay, measured on matured labels, retrains at once."""
    pending = pending or {}
    date = as_date(summary["date"])
    fired: dict[str, str] = {}
    drift = summary.get("drift") or {}
    if drift.get("n_features"):
        share = float(drift["drift_share"])
        if share >= thresholds.drift_share:
            cols = ", ".join(drift.get("drifted_features", []))
            fired["feature_drift"] = f"drift share {share:.2f} >= {thresholds.drift_share:.2f} ({cols})"
    pred = drift.get("prediction") or {}
    if pred.get("score") is not None and pred["score"] >= thresholds.prediction_drift:
        fired["prediction_drift"] = (
            f"score drift {pred['score']:.3f} ({pred.get('method')}) >= {thresholds.prediction_drift:.3f}"
        )
    quality = summary.get("quality") or {}
    # the figure the use case's rule reads (summaries written before use cases declared it: fraud's)
    primary = quality.get("primary", "average_precision")
    label = primary.replace("_", " ")
    ap = quality.get(primary)
    support = quality.get("support", "frauds")
    if ap is not None and quality.get(support, 0) >= thresholds.min_positives:
        baseline = summary.get("baseline") or {}
        base_ap = baseline.get(primary)
        # a baseline is only as good as its positives (summaries without the count: trusted)
        if base_ap and baseline.get(support, thresholds.min_positives) >= thresholds.min_positives:
            drop = 1.0 - ap / base_ap
            if drop >= thresholds.max_quality_drop:
                fired["quality_decay"] = (
                    f"{label} {ap:.3f} is {drop:.0%} below the baseline {base_ap:.3f}"
                    f" (max drop {thresholds.max_quality_drop:.0%})"
                )
        if "quality_decay" not in fired and ap < thresholds.min_quality:
            fired["quality_decay"] = f"{label} {ap:.3f} < floor {thresholds.min_quality:.3f}"
    causes, suppressed = [], []
    deferred: dict[str, str] = {}
    awaiting: dict[str, str] = {}
    retrain_on = due(date) if due is not None else None  # a drift detected today retrains on this date
    for cause in CAUSES:
        waiting = pending.get(cause)
        if waiting is not None and as_date(waiting["due"]) <= date:
            causes.append(cause)
            fired[cause] = (
                f"{waiting.get('detail') or cause} (detected {waiting['detected']}; retrain deferred to "
                f"{waiting['due']} so that it trains on days after the drift)"
            )
            continue
        if cause not in fired:
            continue
        last = last_triggers.get(cause)
        if last is not None and 0 <= (date - as_date(last)).days < thresholds.cooldown_days:
            suppressed.append(cause)
        elif waiting is not None:
            awaiting[cause] = waiting["due"]
        elif cause in DRIFT_CAUSES and retrain_on is not None and retrain_on > date:
            deferred[cause] = retrain_on.isoformat()
        else:
            causes.append(cause)
    return Decision(
        date=date.isoformat(),
        retrain=bool(causes),
        causes=causes,
        suppressed=suppressed,
        details=fired,
        deferred=deferred,
        awaiting=awaiting,
    )


# --- trigger state (declared storage: reports/monitoring/triggers.jsonl) --------------------
def triggers_path(layout: StorageLayout) -> Path:
    return layout.dataset_root("reports", REPORT_KIND) / "triggers.jsonl"


def read_triggers(layout: StorageLayout) -> list[dict[str, Any]]:
    path = triggers_path(layout)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def last_triggers(records: Iterable[Mapping[str, Any]], before: str | dt.date) -> dict[str, str]:
    """Latest trigger date per cause, strictly before ``before``."""
    cutoff = as_date(before)
    out: dict[str, str] = {}
    for r in records:
        d = as_date(r["date"])
        if d >= cutoff:
            continue
        for cause in r.get("causes", []):
            if cause not in out or as_date(out[cause]) < d:
                out[cause] = d.isoformat()
    return out


def pending_retrains(
    records: Iterable[Mapping[str, Any]], before: str | dt.date
) -> dict[str, dict[str, str]]:
    """Deferred drift retrains not yet triggered, from the records strictly before ``before``:
    cause -> ``{"detected", "due", "detail"}`` (a later trigger of the cause clears it)."""
    cutoff = as_date(before)
    out: dict[str, dict[str, str]] = {}
    for r in sorted(records, key=lambda r: r["date"]):
        if as_date(r["date"]) >= cutoff:
            continue
        for cause in r.get("causes", []):
            out.pop(cause, None)
        for cause, due in (r.get("deferred") or {}).items():
            detail = (r.get("details") or {}).get(cause, "")
            out[cause] = {"detected": r["date"], "due": due, "detail": detail}
    return out


def record_trigger(layout: StorageLayout, decision: Decision, run_id: str | None = None) -> Path:
    """Write (idempotently: one record per date) the day's trigger and deferrals to the state file,
    atomically."""
    records = [r for r in read_triggers(layout) if r["date"] != decision.date]
    records.append(
        {
            "date": decision.date,
            "causes": decision.causes,
            "reason": decision.reason,
            "deferred": decision.deferred,
            "details": {c: decision.details[c] for c in decision.deferred if c in decision.details},
            "train_run_id": run_id,
            "recorded_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
    )
    records.sort(key=lambda r: r["date"])
    path = triggers_path(layout)
    with staged_file(path) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# --- integration: champion, reference, current window -------------------------------------
@dataclass
class Champion:
    model: Any
    version: str
    threshold: float | None
    run_id: str | None
    model_id: str | None
    train_start: dt.date | None
    train_end: dt.date | None
    holdout: dict[str, float]  # its gate-holdout figures (reported; selection-biased, never the baseline)
    holdout_end: dt.date | None = None
    tags: dict[str, str] = field(default_factory=dict)  # the model version's tags

    @property
    def selected_through(self) -> dt.date | None:
        """The last day the champion was trained or selected on (its holdout's end, else its training end)."""
        return self.holdout_end or self.train_end


def load_champion(settings: Settings) -> Champion | None:
    """The registry's champion with its training and holdout windows and its holdout figures (None if
    there is none)."""
    from jobs.platform import registry

    try:
        model, version, threshold = registry.load_model(registry.CHAMPION, settings)
    except registry.ModelNotFoundError:
        return None
    client = registry.client(settings)
    mv = client.get_model_version(settings.case.model_name, str(version))
    run_params: dict[str, str] = {}
    run_metrics: dict[str, float] = {}
    run_tags: dict[str, str] = {}
    if mv.run_id:
        run = client.get_run(mv.run_id)
        run_params, run_metrics, run_tags = dict(run.data.params), dict(run.data.metrics), dict(run.data.tags)
    return Champion(
        model=model,
        version=str(version),
        threshold=threshold,
        run_id=mv.run_id,
        model_id=getattr(mv, "model_id", None),
        train_start=_param_date(run_params, "train_start"),
        train_end=_param_date(run_params, "train_end"),
        holdout=_holdout_figures(run_metrics, _monitored_metrics(settings)),
        holdout_end=_param_date(run_params, "holdout_end") or _window_end(run_tags.get("holdout_window")),
        tags=dict(getattr(mv, "tags", None) or {}),
    )


def _monitored_metrics(settings: Settings) -> list[str]:
    use_case = get_use_case(settings)
    spec = use_case.gate(settings)
    gated = [
        spec.primary.name,
        *(g.metric.name for g in spec.guardrails),
        *(f.metric.name for f in spec.floors),
    ]
    return [use_case.monitoring.primary, *gated]


def _param_date(params: Mapping[str, str], key: str) -> dt.date | None:
    value = params.get(key)
    return as_date(value) if value else None


def _window_end(window: str | None) -> dt.date | None:
    """The last day of a logged ``start..end`` window parameter."""
    if not window or ".." not in window:
        return None
    return as_date(window.split("..", 1)[1])


def _holdout_figures(metrics: Mapping[str, float], names: Iterable[str]) -> dict[str, float]:
    """The champion's own holdout figures (``holdout_<name>``, as logged by training) of the metrics
    the use case monitors: its primary quality figure and its gate's metrics."""
    return {
        name: float(metrics[f"holdout_{name}"])
        for name in dict.fromkeys(names)
        if f"holdout_{name}" in metrics
    }


def score_frame(model: Any, frame: pd.DataFrame) -> np.ndarray:
    """The model's fraud probability for each row (the registry's scoring function: same as serving)."""
    from jobs.platform.registry import predict_scores

    return np.asarray(predict_scores(model, frame), dtype="float64")


def reference_path(layout: StorageLayout, version: str) -> Path:
    return (
        layout.dataset_root("reports", REPORT_KIND, "reference") / f"version={version}" / "reference.parquet"
    )


def build_reference(
    train: pd.DataFrame, model: Any, cfg: MonitorConfig | None = None, settings: Settings | None = None
) -> pd.DataFrame:
    """A model's training reference: a seeded sample of its training set with its own scores (the
    use case's id, time and label columns, the score and the model's features)."""
    from jobs.platform.registry import model_features

    cfg = cfg or MonitorConfig()
    spec = get_use_case(settings or get_settings()).monitoring
    ref = _sample(train, cfg.reference_rows, cfg.seed).reset_index(drop=True)
    ref[SCORE] = score_frame(model, ref)
    keep = [*spec.keys, spec.time_column, spec.label, SCORE, *model_features(model)]
    return ref[[c for c in dict.fromkeys(keep) if c in ref.columns]]


def save_reference(layout: StorageLayout, version: str, reference: pd.DataFrame) -> Path:
    path = reference_path(layout, version)
    with staged_file(path) as tmp:
        reference.to_parquet(tmp, index=False)
    return path


def load_reference(layout: StorageLayout, champion: Champion, cfg: MonitorConfig, log) -> pd.DataFrame:
    """The champion's training reference (features, label, champion score), one file per model version.

    Training writes it when it registers the version (:func:`jobs.platform.train.register`), from the frame it
    trained on; for a version registered without one it is rebuilt here from the feature store over the
    champion run's logged training window (``train_start``..``train_end`` params) - the same rows."""
    path = reference_path(layout, champion.version)
    if path.exists():
        return pd.read_parquet(path)
    if champion.train_start is None or champion.train_end is None:
        raise RuntimeError(
            f"champion version {champion.version}: run {champion.run_id} has no train_start/train_end params;"
            " rule: the training run must log its training window"
        )
    settings = layout.settings
    train = get_use_case(settings).training_set(
        as_date(champion.train_start), as_date(champion.train_end), settings
    )
    ref = build_reference(train, champion.model, cfg, settings)
    save_reference(layout, champion.version, ref)
    log.info("reference built", version=champion.version, rows=len(ref), source_rows=len(train))
    return ref


def load_window(start: dt.date, end: dt.date, settings: Settings) -> pd.DataFrame:
    """Feature rows of the transactions of [start, end] (point-in-time, from the feature store)."""
    if end < start:
        return pd.DataFrame()
    return get_use_case(settings).training_set(as_date(start), as_date(end), settings)


# --- MLflow ------------------------------------------------------------------------------
def flat_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    drift = summary.get("drift") or {}
    if drift:
        out["drift_share"] = drift["drift_share"]
        out["n_drifted_features"] = drift["n_drifted"]
        for col, v in drift["features"].items():
            if v["score"] is not None:
                out[f"drift_score.{col}"] = v["score"]
        if drift.get("prediction") and drift["prediction"]["score"] is not None:
            out["prediction_drift_score"] = drift["prediction"]["score"]
    for key, value in (summary.get("quality") or {}).items():
        if isinstance(value, int | float) and value is not None and math.isfinite(value):
            out[f"quality.{key}"] = float(value)
    return out


def log_to_mlflow(settings: Settings, champion: Champion, summary: Mapping[str, Any], out_dir: Path) -> str:
    """One run per (date, model version) in ``<model_name>-monitoring``; re-running a day reuses it."""
    import mlflow

    from jobs.platform import registry

    exp_id = registry.configure_mlflow(settings, experiment=f"{settings.case.model_name}-monitoring")
    client = registry.client(settings)
    date = summary["date"]
    existing = client.search_runs(
        [exp_id],
        filter_string=f"tags.monitoring_date = '{date}' and tags.model_version = '{champion.version}'",
        max_results=1,
    )
    tags = {
        "monitoring_date": date,
        "model_name": settings.case.model_name,
        "model_version": champion.version,
        "kind": "monitoring",
    }
    day_step = (as_date(date) - as_date(settings.case.start_date)).days
    metrics = flat_metrics(summary)
    with mlflow.start_run(
        run_id=existing[0].info.run_id if existing else None,
        experiment_id=exp_id,
        run_name=None if existing else f"monitor-{date}-v{champion.version}",
        tags=tags,
    ) as run:
        mlflow.log_metrics(metrics, step=day_step, model_id=champion.model_id)
        mlflow.log_artifacts(str(out_dir), artifact_path=f"monitoring/date={date}")
        run_id = run.info.run_id
    for key, value in {
        "monitoring.last_date": date,
        "monitoring.drift_share": f"{metrics.get('drift_share', float('nan')):.4f}",
        "monitoring.average_precision": str((summary.get("quality") or {}).get("average_precision")),
        "monitoring.run_id": run_id,
    }.items():
        client.set_model_version_tag(settings.case.model_name, champion.version, key, value)
    return run_id


# --- the job ------------------------------------------------------------------------------
def report_dir(layout: StorageLayout, date: str | dt.date) -> Path:
    return layout.path("reports", date, REPORT_KIND)


def read_summary(layout: StorageLayout, date: str | dt.date) -> dict[str, Any]:
    return json.loads((report_dir(layout, date) / "summary.json").read_text())


BASELINE_TAG = "monitoring.baseline"


def labelled_quality(
    rows: pd.DataFrame,
    champion: Champion,
    spec: MonitoringSpec,
    layout: StorageLayout,
    start: dt.date,
    as_of: dt.date,
) -> Mapping[str, Any]:
    """The use case's quality figures of the champion on feature ``rows`` (days from ``start``) with
    their labels as known at the end of ``as_of``; the figures of no rows when there are none."""
    if len(rows):
        rows = spec.labels(rows, layout, start, as_of)
        scores = score_frame(champion.model, rows)
    else:
        rows = pd.DataFrame(columns=[*dict.fromkeys([*spec.keys, spec.time_column, spec.label])])
        scores = np.empty(0, dtype="float64")
    return spec.quality(rows, scores)


def baseline_window(selected_through: dt.date, window_days: int) -> tuple[dt.date, dt.date]:
    """The days of a champion's live baseline: its first full monitoring window after the last day it
    was trained or selected on."""
    start = selected_through + dt.timedelta(days=1)
    return start, start + dt.timedelta(days=window_days - 1)


def _baseline_days(champion: Champion, cfg: MonitorConfig) -> tuple[dt.date, dt.date] | None:
    selected = champion.selected_through
    return None if selected is None else baseline_window(selected, cfg.window_days)


def live_baseline(
    champion: Champion,
    day: dt.date,
    cfg: MonitorConfig,
    settings: Settings,
    layout: StorageLayout,
    quality: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any] | None, str | None]:
    """(baseline, note): the champion's live baseline as known at the end of ``day`` (None before
    its window matured, with a note saying why and when). Deterministic for a day: its window's
    labels are read as known on the day it matured; the model version's ``monitoring.baseline`` tag
    keeps it once computed, and ``quality`` (today's figures when today's quality window *is* the
    baseline window) saves the read."""
    window = _baseline_days(champion, cfg)
    if window is None:
        return None, "the champion's run logs no training or holdout window: quality decay not assessed"
    matured = window[1] + dt.timedelta(days=settings.case.label_delay_days)
    if day < matured:
        return None, (
            f"quality baseline: the champion's first live week after its holdout ({window[0]}..{window[1]}) "
            f"matures on {matured}; until then quality decay is not assessed (the holdout it won on is "
            "selection-biased)"
        )
    spec = get_use_case(settings).monitoring
    tagged = champion.tags.get(BASELINE_TAG)
    if tagged:
        kept = json.loads(tagged)
        if kept.get("window") == {"start": window[0].isoformat(), "end": window[1].isoformat()}:
            return kept, None
    if quality is None:
        rows = load_window(window[0], window[1], settings).reset_index(drop=True)
        quality = labelled_quality(rows, champion, spec, layout, window[0], matured)
    figures = {
        k: float(v)
        for k, v in quality.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }
    return {
        **figures,
        "window": {"start": window[0].isoformat(), "end": window[1].isoformat()},
        "labels_as_of": matured.isoformat(),
        "source": "first matured live window after the holdout",
    }, None


def run_monitoring(
    date: str | dt.date,
    cfg: MonitorConfig | None = None,
    settings: Settings | None = None,
    drift_share: float = Thresholds.drift_share,
    log_mlflow: bool = True,
) -> dict[str, Any]:
    """Monitor one logical date; writes the report partition and returns the summary."""

    settings = settings or get_settings()
    cfg = cfg or MonitorConfig()
    layout = StorageLayout(settings)
    day = as_date(date)
    log = get_logger("monitor", day.isoformat())
    t0 = time.monotonic()
    window = (day - dt.timedelta(days=cfg.window_days - 1), day)
    notes: list[str] = []

    champion = load_champion(settings)
    if champion is None:
        summary = summarize(
            day,
            None,
            None,
            model_version=None,
            window=window,
            quality_window=None,
            notes=["no champion model in the registry: nothing to monitor"],
        )
        _write_outputs(layout, day, summary, None)
        log.info("no champion", **{"seconds": round(time.monotonic() - t0, 2)})
        return summary

    from jobs.platform.registry import model_features

    features = model_features(champion.model)  # the champion's own inputs, in training order
    reference = load_reference(layout, champion, cfg, log)

    delay = settings.case.label_delay_days
    q_start, q_end = matured_window(day, cfg.window_days, delay)
    selected = champion.selected_through
    if selected is not None and q_start <= selected:
        q_start = selected + dt.timedelta(days=1)  # never judge a model on days it was trained or selected on
    quality_window = (q_start, q_end) if q_start <= q_end else None
    # one point-in-time read covers both windows (the feature store's cost is mostly per call)
    first = min(window[0], q_start) if quality_window else window[0]
    frame = load_window(first, day, settings)
    spec = get_use_case(settings).monitoring
    frame_day = pd.to_datetime(frame[spec.time_column]).dt.date if len(frame) else None

    current = frame[(frame_day >= window[0]).to_numpy()] if len(frame) else frame
    drift = snapshot = None
    if len(current) < cfg.min_rows:
        notes.append(f"current window has {len(current)} rows < min_rows {cfg.min_rows}: drift not assessed")
    else:
        current = _sample(current, cfg.current_rows, cfg.seed).reset_index(drop=True)
        current[SCORE] = score_frame(champion.model, current)
        drift, snapshot = compute_drift(reference, current, features, cfg, SCORE, drift_share)
        drift["score_mean"] = {
            "reference": float(reference[SCORE].mean()),
            "current": float(current[SCORE].mean()),
        }
        log.info(
            "drift",
            drift_share=drift["drift_share"],
            drifted=drift["drifted_features"],
            prediction=drift["prediction"]["score"] if drift["prediction"] else None,
        )

    quality = None
    if quality_window is None:
        notes.append("no matured post-training days yet: quality not assessed")
    else:
        if len(frame):
            matured = frame[((frame_day >= q_start) & (frame_day <= q_end)).to_numpy()].reset_index(drop=True)
        else:
            matured = frame
        figures = labelled_quality(matured, champion, spec, layout, q_start, day)
        quality = {**figures, "primary": spec.primary, "support": spec.support}
        log.info("quality", **quality)

    same_days = quality_window is not None and quality_window == _baseline_days(champion, cfg)
    baseline, note = live_baseline(champion, day, cfg, settings, layout, quality if same_days else None)
    if note:
        notes.append(note)
    elif baseline is not None and log_mlflow and champion.tags.get(BASELINE_TAG) is None:
        from jobs.platform import registry

        registry.client(settings).set_model_version_tag(
            settings.case.model_name, champion.version, BASELINE_TAG, json.dumps(baseline, default=str)
        )

    summary = summarize(
        day,
        drift,
        quality,
        model_version=champion.version,
        window=window,
        quality_window=quality_window,
        baseline=baseline,
        holdout=champion.holdout,
        notes=notes,
    )
    out = _write_outputs(layout, day, summary, snapshot)
    if log_mlflow:
        summary["mlflow_run_id"] = log_to_mlflow(settings, champion, summary, out)
    log.info("monitoring done", version=champion.version, seconds=round(time.monotonic() - t0, 2))
    return summary


def _write_outputs(layout: StorageLayout, day: dt.date, summary: dict[str, Any], snapshot) -> Path:
    final = report_dir(layout, day)
    with staged_directory(final) as tmp:
        tmp.mkdir(parents=True)
        if snapshot is not None:
            snapshot.save_html(str(tmp / "report.html"))
            summary["report"] = str(final / "report.html")
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return final


def decide_for_date(
    date: str | dt.date, thresholds: Thresholds, settings: Settings | None = None
) -> Decision:
    """Read the day's summary and the trigger state; return the decision (does not record it)."""
    settings = settings or get_settings()
    layout = StorageLayout(settings)
    summary = read_summary(layout, date)
    records = read_triggers(layout)
    case = settings.case

    def due(day: dt.date) -> dt.date:
        return drift_retrain_due(day, thresholds.post_drift_days, case.label_delay_days, case.holdout_days)

    return decide(summary, thresholds, last_triggers(records, date), pending_retrains(records, date), due)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jobs.platform.monitor", description=__doc__.split("\n\n")[0])
    p.add_argument("--date", required=True, help="logical date YYYY-MM-DD")
    p.add_argument("--window-days", type=int, default=MonitorConfig.window_days)
    p.add_argument("--no-mlflow", action="store_true", help="do not log the figures to MLflow")
    p.add_argument("--decide", action="store_true", help="also print the retraining decision")
    args = p.parse_args(argv)
    summary = run_monitoring(
        args.date, MonitorConfig(window_days=args.window_days), log_mlflow=not args.no_mlflow
    )
    print(json.dumps(summary, indent=2, default=str))
    if args.decide:
        print(
            json.dumps(
                decide_for_date(args.date, Thresholds.from_settings(get_settings())).to_dict(), indent=2
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
