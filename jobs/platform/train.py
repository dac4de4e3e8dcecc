"""Training: a point-in-time correct training set from the feature service -> XGBoost (the use
case's :class:`~jobs.platform.use_case.ModelSpec`: a binary classifier, or a learning-to-rank model
over query groups) -> one MLflow run -> a registered ``challenger`` -> evaluated against the
champion on a later holdout -> promoted only if the gate says so.

Imbalance (classifiers): positives can be rare (frauds are well under 1% of transactions).
``scale_pos_weight`` re-weights the positive class; the default strategy ``auto`` uses neg/pos of the
training window (``sqrt`` and ``none`` are the alternatives the search may pick); the chosen
strategy and value are logged. Rankers (``rank:*``) learn from the order within each query group and
are not re-weighted; their rows are sorted by group and logged position before fitting.

Hyperparameter search (``--hpo N``): N configurations from :data:`SEARCH_GRID`, each fitted on the early
part of the training window and scored on its last ``--val-days`` days, after a gap of
``label_delay_days`` (time-ordered, never shuffled); the best average precision wins and the final
model is refitted on the whole window. Every trial is a nested MLflow run.

CLI::

    python -m jobs.platform.train --train-start 2018-04-08 --train-end 2018-04-21 \\
        [--holdout-start 2018-04-29 --holdout-end 2018-05-05] [--hpo 6] [--margin 0.01] [--reason ...]
    python -m jobs.platform.train --as-of 2018-05-05            # default windows ending at a date

Without holdout dates the holdout is the ``holdout_days`` days starting ``label_delay_days`` + 1
days after ``--train-end``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import itertools
import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jobs.platform import metrics as M
from jobs.platform.config import Settings, get_settings
from jobs.platform.evaluate import (
    Evaluation,
    GateDecision,
    Windows,
    check_protocol,
    default_windows,
    gate,
    gate_metrics,
    label_dataset,
    labels_through,
    log_evaluation,
    paired_resamples,
)
from jobs.platform.logs import get_logger
from jobs.platform.params import TrainParams
from jobs.platform.storage import StorageLayout, as_date
from jobs.platform.use_case import ModelSpec, get_use_case

TrainingSetFn = Callable[[dt.date, dt.date], pd.DataFrame]


def model_spec(settings: Settings | None = None) -> ModelSpec:
    """The model the use case has the core train (``UseCase.model``)."""
    return get_use_case(settings or get_settings()).model


def search_grid(model: ModelSpec) -> dict[str, list[Any]]:
    """The hyperparameter grid of a model flavour (rankers are not class re-weighted)."""
    if model.ranker:
        return {k: v for k, v in SEARCH_GRID.items() if k != "scale_pos_weight"}
    return SEARCH_GRID


SEARCH_GRID: dict[str, list[Any]] = {
    "max_depth": [3, 4, 5, 6],
    "n_estimators": [50, 100, 200],
    "learning_rate": [0.05, 0.1, 0.3],
    "min_child_weight": [1.0, 5.0],
    "subsample": [0.8, 1.0],
    "colsample_bynode": [0.5, 1.0],
    "scale_pos_weight": ["auto", "sqrt", "none"],
    "max_bin": [256, 4096],
}
"""Depth, trees, learning rate, the minimum hessian per leaf, row subsampling, feature subsampling
per split, the imbalance strategy and the histogram resolution (1,728 configurations; a search draws
``--hpo N`` of them, the base first). ``colsample_bynode``: half the features offered to each split,
the random forest's decorrelation of trees, a variance cut where a week of training data holds a few
hundred positives. ``max_bin``: ``hist`` places its candidate splits at quantiles, so the few bins of a
feature's far tail cannot express a sharp cut there (fraud: amounts above a fixed limit); 4,096 bins
recover what the exact method finds, at ``hist``'s speed."""


def require_positives(y: np.ndarray, model: ModelSpec) -> None:
    """A model needs at least one positive (a fraud, a click) in its training rows."""
    if not (np.asarray(y) > 0).any():
        raise ValueError(
            f"{model.label}: 0 {model.positive}s in the training window; rule: need at least one positive"
        )


def resolve_scale_pos_weight(y: np.ndarray, strategy: str, model: ModelSpec | None = None) -> float:
    """neg/pos (``auto``), its square root (``sqrt``), 1 (``none``) or an explicit number."""
    model = model or model_spec()
    require_positives(y, model)
    pos = int(np.sum(y == 1))
    neg = int(np.sum(y == 0))
    ratio = neg / pos
    if strategy == "auto":
        return ratio
    if strategy == "sqrt":
        return float(np.sqrt(ratio))
    if strategy == "none":
        return 1.0
    try:
        value = float(strategy)
    except ValueError:
        raise ValueError(
            f"scale_pos_weight: value {strategy!r} is invalid; rule: auto | sqrt | none | a positive number"
        ) from None
    if value <= 0:
        raise ValueError(f"scale_pos_weight: value {value} is invalid; rule: must be > 0")
    return value


def ranking_order(frame: pd.DataFrame, model: ModelSpec) -> pd.DataFrame:
    """A ranker's rows in the order xgboost needs: by query group, then by logged position (the order
    position debiasing reads), stable otherwise."""
    missing = [c for c in (model.group, model.position) if c and c not in frame.columns]
    if missing:
        raise ValueError(
            f"training set: missing column(s) {missing}; rule: a ranker needs its group/position"
        )
    keys = [c for c in (model.group, model.position) if c]
    return frame.sort_values(keys, kind="stable")


def query_ids(frame: pd.DataFrame, model: ModelSpec) -> np.ndarray:
    """Integer query ids, non-decreasing over rows in :func:`ranking_order`."""
    codes, _ = pd.factorize(frame[model.group], sort=True)
    return codes


def fit_model(
    train_df: pd.DataFrame, features: list[str], params: TrainParams, model: ModelSpec | None = None
):
    """The use case's model fitted on the named feature columns: an ``xgboost.XGBClassifier`` for a
    ``binary:*`` objective, an ``xgboost.XGBRanker`` over query groups for ``rank:*``; returns
    (model, spw) (spw 1.0 for rankers)."""
    import xgboost as xgb

    spec = model or model_spec()
    missing = [f for f in features if f not in train_df.columns]
    if missing:
        raise ValueError(f"training set: missing feature column(s) {missing}; rule: needs {features}")
    common = dict(
        objective=spec.objective,
        tree_method="hist",
        max_depth=int(params.max_depth),
        n_estimators=int(params.n_estimators),
        learning_rate=float(params.learning_rate),
        min_child_weight=float(params.min_child_weight),
        subsample=float(params.subsample),
        colsample_bytree=float(params.colsample_bytree),
        colsample_bynode=float(params.colsample_bynode),
        max_bin=int(params.max_bin),
        random_state=int(params.seed),
        n_jobs=int(params.n_jobs),
        eval_metric=spec.eval_metric,
        **dict(spec.xgb_params),
    )
    if spec.ranker:
        frame = ranking_order(train_df, spec)
        y = frame[spec.label].to_numpy(dtype=int)
        require_positives(y, spec)
        ranker = xgb.XGBRanker(**common)
        ranker.fit(frame[features].astype("float64"), y, qid=query_ids(frame, spec))
        return ranker, 1.0
    y = train_df[spec.label].to_numpy(dtype=int)
    spw = resolve_scale_pos_weight(y, str(params.scale_pos_weight), spec)
    classifier = xgb.XGBClassifier(**common, scale_pos_weight=spw)
    classifier.fit(train_df[features].astype("float64"), y)
    return classifier, spw


def in_sample_metrics(frame: pd.DataFrame, scores: np.ndarray, model: ModelSpec) -> dict[str, float]:
    """The fit's own figures on its training rows: AUC ROC and AP for a classifier, NDCG@10 and MRR
    over the query groups for a ranker."""
    y = frame[model.label].to_numpy(dtype=int)
    if model.ranker:
        group = frame[model.group].to_numpy()
        return {
            "train_ndcg_at_10_in_sample": M.ndcg_at_k(group, y, scores, 10),
            "train_mrr_in_sample": M.mrr(group, y, scores),
        }
    ranking = M.binary_metrics(y, scores)
    return {
        "train_auc_roc_in_sample": ranking["auc_roc"],
        "train_average_precision_in_sample": ranking["average_precision"],
    }


def data_fingerprint(df: pd.DataFrame, features: list[str], model: ModelSpec | None = None) -> str:
    """sha256 of the training rows (ids, timestamps, features, label), independent of row order."""
    spec = model or model_spec()
    ids = (spec.row_id, spec.time_column, spec.group, spec.position)
    cols = [c for c in dict.fromkeys(ids) if c and c in df.columns] + list(features) + [spec.label]
    frame = df[cols]
    if spec.row_id in frame.columns:
        frame = frame.sort_values(spec.row_id, kind="stable")
    row_hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    digest = hashlib.sha256(row_hashes.tobytes())
    digest.update(json.dumps(cols).encode())
    return digest.hexdigest()


def split_validation(
    df: pd.DataFrame,
    val_days: int,
    gap_days: int,
    model: ModelSpec | None = None,
    purpose: str = "hpo",
    *,
    shift_days: int = 0,
    fit_days: int | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str]]:
    """Time-ordered split of a training window: fit on the early days, validate on the last
    ``val_days`` days, with ``gap_days`` days left out between them. ``shift_days`` moves the whole
    split back (an older fold of a prequential validation: its validation days end ``shift_days``
    before the window's last day); ``fit_days`` fits on only the last that many days before the gap
    (None: every earlier day of the window)."""
    spec = model or model_spec()
    days = pd.to_datetime(df[spec.time_column]).dt.normalize()
    last = days.max() - pd.Timedelta(days=shift_days)
    val_start = last - pd.Timedelta(days=val_days - 1)
    fit_end = val_start - pd.Timedelta(days=gap_days + 1)
    in_fit = days <= fit_end
    if fit_days is not None:
        in_fit &= days > fit_end - pd.Timedelta(days=fit_days)
    fit = df[in_fit]
    val = df[(days >= val_start) & (days <= last)]
    if fit.empty or fit[spec.label].sum() == 0 or val[spec.label].nunique() < 2:
        first = days.min().date()
        raise ValueError(
            f"{purpose}: training window {first}..{last.date()} is too short for a {val_days}-day "
            f"validation window after a {gap_days}-day gap (need {spec.positive}s on both sides); rule: "
            "use a longer window" + (" or --hpo 0" if purpose == "hpo" else "")
        )
    window = {
        "fit_end": str(fit_end.date()),
        "val_start": str(val_start.date()),
        "val_end": str(last.date()),
    }
    return fit, val, window


def candidate_params(
    base: TrainParams, n: int, seed: int = 0, grid_spec: Mapping[str, list[Any]] = SEARCH_GRID
) -> list[TrainParams]:
    """``n`` distinct configurations from a grid (default :data:`SEARCH_GRID`; the base first)."""
    grid = [dict(zip(grid_spec, combo, strict=True)) for combo in itertools.product(*grid_spec.values())]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(grid))
    out, seen = [base], {dataclasses.astuple(base)}  # a set: drawing the whole grid stays linear
    for i in order:
        cand = base.replace(**grid[i])
        if dataclasses.astuple(cand) not in seen:
            seen.add(dataclasses.astuple(cand))
            out.append(cand)
        if len(out) >= n:
            break
    return out[:n]


def neighbours(params: TrainParams, grid_spec: Mapping[str, list[Any]]) -> list[TrainParams]:
    """The configurations one grid step away from ``params``: each parameter moved to the value
    before or after its own in the grid's list (a parameter whose value is not in the grid stays)."""
    out = []
    for name, values in grid_spec.items():
        current = getattr(params, name)
        if current not in values:
            continue
        i = values.index(current)
        out += [params.replace(**{name: values[j]}) for j in (i - 1, i + 1) if 0 <= j < len(values)]
    return out


def proposals(
    base: TrainParams,
    trials: int,
    seed: int,
    grid_spec: Mapping[str, list[Any]],
    ranked: Callable[[], list[TrainParams]],
) -> Iterator[tuple[str, TrainParams]]:
    """The search's configurations, (phase, params), ``trials`` at most: the first half (rounded
    up) drawn at random from the grid (:func:`candidate_params`, the base first), then a greedy
    refinement: the untried :func:`neighbours` of the best configuration so far (``ranked()``, best
    first, re-read after every trial), or of the next best when the best has none left; random draws
    again when no tried configuration has an untried neighbour."""
    size = int(np.prod([len(v) for v in grid_spec.values()]))
    pool = candidate_params(base, size + 1, seed, grid_spec)
    tried: list[TrainParams] = []
    explore = trials - trials // 2
    for params in pool[:explore]:
        tried.append(params)
        yield "random", params
    while len(tried) < trials:
        step = next(
            (("refine", n) for best in ranked() for n in neighbours(best, grid_spec) if n not in tried),
            None,
        ) or next((("random", p) for p in pool if p not in tried), None)
        if step is None:  # the whole grid was tried
            return
        tried.append(step[1])
        yield step


def _mean(values: list[float]) -> float:
    """The mean of the finite values (NaN when there is none)."""
    finite = [float(v) for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def search_hyperparameters(
    df: pd.DataFrame,
    features: list[str],
    base: TrainParams,
    trials: int,
    *,
    val_days: int,
    gap_days: int,
    log=None,
    settings: Settings | None = None,
    folds: int = 1,
    fit_days: int | None = None,
) -> tuple[TrainParams, pd.DataFrame]:
    """Try ``trials`` configurations on a time-ordered validation window, each evaluated by the use
    case (``UseCase.evaluate``; its headline metrics are logged as ``val_<metric>``); the best value
    of the gate's primary metric wins (fraud: average precision).

    ``folds`` > 1 is prequential validation (the handbook's chapter 5.2): the same split repeated
    ``folds`` times, each ``val_days`` further back (:func:`split_validation`'s ``shift_days``;
    ``fit_days`` keeps every fold's fit window the same length); a configuration's figures are the
    means over the folds (each fold's primary metric is kept as ``val_<metric>_fold<k>``, fold 0 the
    latest), so one noisy validation week does not choose the model."""
    import mlflow

    from jobs.platform.registry import predict_scores

    settings = settings or get_settings()
    use_case = get_use_case(settings)
    spec, primary = use_case.model, use_case.gate(settings).primary
    key = f"val_{primary.name}"
    if folds < 1:
        raise ValueError(f"folds: {folds}; rule: at least 1")
    splits = [
        split_validation(df, val_days, gap_days, spec, shift_days=k * val_days, fit_days=fit_days)
        for k in range(folds)
    ]
    window = dict(splits[0][2])
    if folds > 1:
        window |= {"folds": str(folds), "first_fold_val_start": splits[-1][2]["val_start"]}
    rows: list[dict[str, Any]] = []
    tried: list[TrainParams] = []
    grid = search_grid(spec)

    def order() -> list[int]:
        """The trials so far, best first (NaN last, ties to the earlier trial): the refinement's
        order and the returned table's."""
        sign = -1.0 if primary.higher_is_better else 1.0
        return sorted(range(len(rows)), key=lambda j: (bool(np.isnan(rows[j][key])), sign * rows[j][key], j))

    def ranked() -> list[TrainParams]:
        return [tried[j] for j in order()]

    for i, (phase, params) in enumerate(proposals(base, trials, base.seed, grid, ranked)):
        started = time.monotonic()
        per_fold, spws = [], []
        for fit, val, _ in splits:
            model, fold_spw = fit_model(fit, features, params, spec)
            spws.append(fold_spw)
            scores = predict_scores(model, val)
            per_fold.append(use_case.headline(use_case.evaluate(val, scores, settings=settings)))
        spw = spws[0]  # the latest fold's, as a single split reports
        figures = {name: _mean([f[name] for f in per_fold]) for name in per_fold[0]}
        row = {
            "trial": i,
            "phase": phase,
            **dataclasses.asdict(params),
            "scale_pos_weight_value": spw,
            **{f"val_{name}": value for name, value in figures.items()},
            **({f"{key}_fold{k}": f[primary.name] for k, f in enumerate(per_fold)} if folds > 1 else {}),
            "fit_seconds": round(time.monotonic() - started, 2),
        }
        rows.append(row)
        tried.append(params)
        with mlflow.start_run(run_name=f"trial-{i}", nested=True):
            mlflow.log_params({**dataclasses.asdict(params), **window, "search_phase": phase})
            mlflow.log_metrics(
                {k: float(v) for k, v in row.items() if k.startswith("val_") and not np.isnan(v)}
                | {"scale_pos_weight_value": spw}
            )
        if log is not None:
            log.info("hpo trial", trial=i, phase=phase, **{key: row.get(key)})
    table = pd.DataFrame(rows).iloc[order()]
    best = table.iloc[0]
    types = {f.name: type(getattr(base, f.name)) for f in dataclasses.fields(base)}
    best_params = base.replace(**{k: types[k](best[k]) for k in grid})  # numpy scalars -> the field's type
    return best_params, table


@dataclass(frozen=True)
class DecisionFit:
    """The decision threshold of a use case with a decision policy, fitted out of sample: where
    (``window``: fit_end, val_start, val_end; ``source``) and with what validation figures."""

    threshold: float
    source: str
    window: dict[str, str]
    figures: dict[str, float]

    def params(self) -> dict[str, str]:
        return {"decision_source": self.source, **{f"decision_{k}": v for k, v in self.window.items()}}


def fit_decision_threshold(
    train_df: pd.DataFrame,
    features: list[str],
    params: TrainParams,
    *,
    settings: Settings,
    val_days: int = 7,
    log=None,
) -> DecisionFit | None:
    """The decision threshold, chosen on a validation window rather than on the holdout the gate
    reports it on (fitting it there would report the cost of a threshold nobody could have picked).

    A model with the final parameters is fitted on the training window's early days and scores its
    last ``min(val_days, days // 3)`` days; the use case's decision policy (``UseCase.evaluate``:
    fraud's cost-optimal threshold) picks the threshold there, and the final model, fitted on the
    whole window, is registered with it. A window too short to split (one day, or no positives on
    a side) falls back to the training rows themselves, and says so (``decision_source``). None
    for a use case without a decision policy."""
    from jobs.platform.registry import predict_scores

    use_case = get_use_case(settings)
    if use_case.decision_tag is None:
        return None
    spec = use_case.model
    n_days = int(pd.to_datetime(train_df[spec.time_column]).dt.normalize().nunique())
    days = max(1, min(val_days, n_days // 3))
    try:
        fit, val, window = split_validation(train_df, days, 0, spec, purpose="decision threshold")
        source = "validation"
    except ValueError as exc:
        fit = val = train_df
        window = {"val_start": "", "val_end": ""}
        source = "in-sample (training window too short to validate)"
        if log is not None:
            log.warning("decision threshold fitted in sample", error=str(exc))
    model, _ = fit_model(fit, features, params, spec)
    ev = use_case.evaluate(val, predict_scores(model, val), settings=settings)
    threshold = float(use_case.version_tags(ev)[use_case.decision_tag])
    figures = {
        f"decision_val_{k}": float(v) for k, v in use_case.headline(ev).items() if k != use_case.decision_tag
    }
    return DecisionFit(threshold, source, window, figures)


def importance_figure(model, top: int = 20):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gain = model.get_booster().get_score(importance_type="gain")
    items = sorted(gain.items(), key=lambda kv: kv[1])[-top:]
    fig, ax = plt.subplots(figsize=(7, max(3, 0.35 * len(items) + 1)))
    ax.barh([k for k, _ in items], [v for _, v in items])
    ax.set(xlabel="total gain / split (xgboost 'gain')", title="Feature importance")
    fig.tight_layout()
    return fig


IMPORTANCE_TYPES = ("gain", "total_gain", "weight", "cover", "total_cover")


def explain_model(
    model, frame: pd.DataFrame, features: list[str], sample: int = 5_000, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """What the fitted booster relies on, from xgboost itself: its split importances (every
    ``importance_type``; 0 for a feature it never split on) and a SHAP summary of up to ``sample``
    seeded rows of ``frame`` from ``Booster.predict(pred_contribs=True)`` (TreeSHAP: per row, the
    contributions plus the bias column sum to the margin). Returns (importance, shap summary sorted
    by mean |SHAP|, the contribution matrix with the bias last)."""
    import xgboost as xgb

    booster = model.get_booster()
    importance = pd.DataFrame(
        {t: pd.Series(booster.get_score(importance_type=t), dtype="float64") for t in IMPORTANCE_TYPES}
    )
    importance = importance.reindex(features).fillna(0.0).rename_axis("feature").reset_index()
    rows = frame[features].astype("float64")
    if len(rows) > sample:
        rows = rows.sample(sample, random_state=seed)
    contribs = booster.predict(xgb.DMatrix(rows, feature_names=list(features)), pred_contribs=True)
    values = contribs[:, :-1]
    shap = pd.DataFrame(
        {
            "feature": list(features),
            "mean_abs_shap": np.abs(values).mean(axis=0),
            "mean_shap": values.mean(axis=0),
            "share_of_abs_shap": np.abs(values).mean(axis=0)
            / max(float(np.abs(values).mean(axis=0).sum()), 1e-12),
        }
    ).sort_values(["mean_abs_shap", "feature"], ascending=[False, True], ignore_index=True)
    return importance, shap, contribs


def shap_figure(shap: pd.DataFrame, top: int = 20):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    head = shap.head(top).iloc[::-1]
    fig, ax = plt.subplots(figsize=(7, max(3, 0.35 * len(head) + 1)))
    ax.barh(head["feature"], head["mean_abs_shap"])
    ax.set(xlabel="mean |SHAP| (margin units; xgboost pred_contribs)", title="SHAP summary")
    fig.tight_layout()
    return fig


def log_explanations(model, frame: pd.DataFrame, features: list[str], seed: int = 0) -> pd.DataFrame:
    """Log :func:`explain_model` to the active MLflow run: ``explain/importance.csv``,
    ``explain/shap_summary.csv``, ``plots/shap_summary.png`` and the tag ``top_features`` (the five
    largest mean |SHAP|). Returns the SHAP summary."""
    import matplotlib.pyplot as plt
    import mlflow

    importance, shap, _ = explain_model(model, frame, features, seed=seed)
    mlflow.log_text(importance.to_csv(index=False), "explain/importance.csv")
    mlflow.log_text(shap.to_csv(index=False), "explain/shap_summary.csv")
    fig = shap_figure(shap)
    mlflow.log_figure(fig, "plots/shap_summary.png")
    plt.close(fig)
    mlflow.set_tag("top_features", ",".join(shap["feature"].head(5)))
    return shap


def model_requirements() -> list[str]:
    """The model's pinned runtime requirements, stated rather than inferred (MLflow's inference
    re-imports the model in a subprocess, ~30 s per run)."""
    from importlib.metadata import version

    return [
        f"{pkg}=={version(pkg)}" for pkg in ("mlflow", "xgboost", "scikit-learn", "numpy", "pandas", "scipy")
    ]


@dataclass
class TrainingRun:
    run_id: str
    model_uri: str
    model: Any
    params: TrainParams
    scale_pos_weight: float
    data_sha256: str
    train_rows: int
    train_positives: int
    features: list[str]
    decision_threshold: float | None = None


def train_and_log(
    train_df: pd.DataFrame,
    features: list[str],
    params: TrainParams,
    *,
    windows: Windows,
    feature_service: str,
    feature_service_version: str,
    hpo_trials: int = 0,
    val_days: int = 7,
    reason: str = "manual",
    actor: str | None = None,
    settings: Settings | None = None,
    experiment: str | None = None,
) -> TrainingRun:
    """Fit (optionally after a search) and log everything to one MLflow run."""
    import matplotlib.pyplot as plt
    import mlflow
    import mlflow.xgboost
    from mlflow.models import infer_signature

    from jobs.platform import registry

    settings = settings or get_settings()
    spec = model_spec(settings)
    log = get_logger("train", windows.train_end.isoformat())
    if train_df.empty:
        raise ValueError(f"training set {windows.train_start}..{windows.train_end}: 0 rows; rule: need data")
    days = pd.to_datetime(train_df[spec.time_column]).dt.date
    if days.min() < windows.train_start or days.max() > windows.train_end:
        raise ValueError(
            f"training set: rows from {days.min()}..{days.max()} outside the window "
            f"{windows.train_start}..{windows.train_end}; rule: train only on the window"
        )
    digest = data_fingerprint(train_df, features, spec)
    relevant = train_df[spec.label].to_numpy() > 0
    positives = int(relevant.sum())
    registry.configure_mlflow(settings, experiment)
    run_name = f"train {windows.train_start}..{windows.train_end}"
    with mlflow.start_run(run_name=run_name) as run:
        mlflow.set_tags(
            {
                "feature_service": feature_service,
                "feature_service_version": feature_service_version,
                "train_window": f"{windows.train_start}..{windows.train_end}",
                "holdout_window": f"{windows.holdout_start}..{windows.holdout_end}",
                "data_sha256": digest,
                "reason": reason,
                "actor": actor or registry.default_actor(),
                "model_name": settings.case.model_name,
            }
        )
        search_table = None
        if hpo_trials > 1:
            params, search_table = search_hyperparameters(
                train_df,
                features,
                params,
                hpo_trials,
                val_days=val_days,
                gap_days=settings.case.label_delay_days,
                log=log,
                settings=settings,
            )
            best = search_table.iloc[0]
            mlflow.log_metrics(
                {
                    k: float(best[k])
                    for k in search_table.columns
                    if k.startswith("val_") and not np.isnan(float(best[k]))
                }
            )
            mlflow.log_text(search_table.to_csv(index=False), "hpo/trials.csv")
        started = time.monotonic()
        model, spw = fit_model(train_df, features, params, spec)
        fit_seconds = time.monotonic() - started
        hyperparameters = dataclasses.asdict(params)
        if spec.ranker:  # rankers are not class re-weighted
            del hyperparameters["scale_pos_weight"]
        else:
            hyperparameters |= {
                "scale_pos_weight_strategy": params.scale_pos_weight,
                "scale_pos_weight_value": round(spw, 4),
            }
        mlflow.log_params(
            {
                **hyperparameters,
                **windows.as_params(),
                "label_delay_days": settings.case.label_delay_days,
                "feature_service": feature_service,
                "feature_service_version": feature_service_version,
                "features": ",".join(features),
                "hpo_trials": hpo_trials,
                "objective": spec.objective,
                **spec.xgb_params,
                **spec.run_params(settings),
            }
        )
        decision = fit_decision_threshold(
            train_df, features, params, settings=settings, val_days=val_days, log=log
        )
        if decision is not None:
            mlflow.log_params(decision.params())
            mlflow.log_metrics(
                {"decision_threshold": decision.threshold}
                | {k: v for k, v in decision.figures.items() if not np.isnan(v)}
            )
        in_sample = registry.predict_scores(model, train_df)
        mlflow.log_metrics(
            {
                "train_rows": len(train_df),
                f"train_{spec.positive}s": positives,
                f"train_{spec.positive}_rate": float(relevant.mean()),
                **({"train_queries": int(train_df[spec.group].nunique())} if spec.ranker else {}),
                **{
                    f"train_{column.removesuffix('_id')}s": int(train_df[column].nunique())
                    for column in spec.entity_columns
                    if column in train_df.columns
                },
                "train_days": int(days.nunique()),
                "scale_pos_weight": spw,
                "fit_seconds": fit_seconds,
                **in_sample_metrics(train_df, in_sample, spec),
            }
        )
        fig = importance_figure(model)
        mlflow.log_figure(fig, "plots/feature_importance.png")
        plt.close(fig)
        log_explanations(model, train_df, features, seed=params.seed)
        example = train_df[features].head(5).astype("float64")
        signature = infer_signature(example, registry.predict_scores(model, example))
        info = mlflow.xgboost.log_model(
            model,
            name="model",
            model_format="ubj",
            signature=signature,
            input_example=example,
            params={"decision_rule": spec.decision_rule} if spec.decision_rule else None,
            pip_requirements=model_requirements(),
        )
        companion = get_use_case(settings).companion
        if companion is not None:  # fitted and versioned with the model: one bundle
            import tempfile

            with tempfile.TemporaryDirectory(prefix="companion-") as folder:
                started = time.monotonic()
                figures = companion.fit(train_df, windows, settings, Path(folder))
                mlflow.log_artifacts(folder, companion.artifact_path)
                mlflow.log_metrics(
                    {
                        **{f"companion_{k}": float(v) for k, v in figures.items()},
                        "companion_fit_seconds": time.monotonic() - started,
                    }
                )
        log.info(
            "model trained",
            run_id=run.info.run_id,
            rows=len(train_df),
            positives=positives,
            scale_pos_weight=round(spw, 2),
            fit_seconds=round(fit_seconds, 2),
        )
    return TrainingRun(
        run_id=run.info.run_id,
        model_uri=info.model_uri,
        model=model,
        params=params,
        scale_pos_weight=spw,
        data_sha256=digest,
        train_rows=len(train_df),
        train_positives=positives,
        features=list(features),
        decision_threshold=None if decision is None else decision.threshold,
    )


# --- evaluation against the champion and the gate ----------------------------------------------
@dataclass
class GateOutcome:
    version: str
    run_id: str
    decision: GateDecision
    challenger: Evaluation
    champion: Evaluation | None
    champion_version: str | None
    metrics: dict[str, float]  # the use case's headline figures of the challenger (UseCase.headline)
    champion_metrics: dict[str, float] | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "run_id": self.run_id,
            "promote": self.decision.promote,
            "reason": self.decision.reason,
            "champion_version": self.champion_version,
            "metrics": self.metrics,
            "champion_metrics": self.champion_metrics,
        }


def evaluate_and_gate(
    version: str,
    run_id: str,
    holdout_df: pd.DataFrame,
    *,
    margin: float | None = None,
    reason: str = "",
    actor: str | None = None,
    settings: Settings | None = None,
) -> GateOutcome:
    """Score the challenger and the current champion on the same holdout, log the challenger's
    evaluation to its run, tag the version with its decision threshold, and apply the gate.
    A refusal is recorded in the audit log; a promotion is left to :func:`jobs.platform.registry.promote`."""
    from jobs.platform import registry

    settings = settings or get_settings()
    use_case = get_use_case(settings)
    spec = use_case.gate(settings)
    if margin is not None:
        spec = spec.with_margin(margin)
    log = get_logger("evaluate")
    registry.client(settings)  # points MLflow at the platform's tracking/registry store
    model, _, threshold = registry.load_model(None, settings, version=str(version))
    scores = registry.predict_scores(model, holdout_df)
    challenger = use_case.evaluate(
        holdout_df, scores, settings=settings, model_version=str(version), threshold=threshold
    )
    log_evaluation(run_id, holdout_df, scores, challenger, figures=use_case.figures)
    registry.set_version_tags(version, dict(use_case.version_tags(challenger)), settings)
    champ_version = registry.champion_version(settings)
    champion = paired = None
    if champ_version is not None and champ_version != str(version):
        champ_model, _, champ_threshold = registry.load_model("champion", settings)
        champ_scores = registry.predict_scores(champ_model, holdout_df)
        champion = use_case.evaluate(
            holdout_df,
            champ_scores,
            settings=settings,
            model_version=champ_version,
            threshold=champ_threshold,
        )
        paired = paired_resamples(holdout_df, scores, champ_scores, spec)
    decision = gate(challenger, champion, spec, paired)
    import mlflow

    with mlflow.start_run(run_id=run_id):
        mlflow.log_dict(
            {**decision.as_dict(), "bootstrap": None if paired is None else paired.summary()},
            "evaluation/gate.json",
        )
        if champion is not None:
            mlflow.log_metrics(champion.flat(prefix="champion_holdout_"))
            mlflow.log_metrics(gate_metrics(decision))
        mlflow.set_tags(
            {"gate": "pass" if decision.promote else "refused", "gate_reason": decision.reason[:4000]}
        )
    outcome = GateOutcome(
        str(version),
        run_id,
        decision,
        challenger,
        champion,
        champ_version,
        metrics=use_case.headline(challenger),
        champion_metrics=None if champion is None else use_case.headline(champion),
    )
    log.info(
        "gate decided",
        version=str(version),
        champion=champ_version,
        promote=decision.promote,
        reason=decision.reason,
    )
    if not decision.promote:
        registry.record_refusal(
            version,
            reason=f"{decision.reason} (trigger: {reason})" if reason else decision.reason,
            run_id=run_id,
            actor=actor,
            metrics=outcome.metrics,
            champion_metrics=outcome.champion_metrics,
            checks=decision.checks,
            settings=settings,
        )
    return outcome


def promote_outcome(
    outcome: dict[str, Any], *, reason: str, actor: str | None, settings: Settings | None = None
):
    """Promote the challenger of a passing gate outcome (``GateOutcome.as_dict()``)."""
    from jobs.platform import registry

    if not outcome["promote"]:
        raise ValueError(
            f"version {outcome['version']}: the gate refused it; rule: only promote a passing gate"
        )
    return registry.promote(
        outcome["version"],
        reason=f"{outcome['reason']} (trigger: {reason})" if reason else outcome["reason"],
        run_id=outcome["run_id"],
        actor=actor,
        metrics=outcome["metrics"],
        champion_metrics=outcome.get("champion_metrics"),
        settings=settings,
    )


# --- the feature service --------------------------------------------------------------------
def feature_service_info(settings: Settings) -> tuple[list[str], str]:
    """(model input columns, version) of the configured Feast feature service. The version is a
    digest of the feature service's registered definition, so a changed definition is visible."""
    from jobs.platform import feature_store

    store = feature_store.get_store(settings)
    service = store.get_feature_service(settings.case.feature_service)
    spec = service.to_proto().spec
    digest = hashlib.sha256(spec.SerializeToString(deterministic=True)).hexdigest()[:16]
    return get_use_case(settings).features.model_inputs(service), digest


def load_training_set(start: dt.date, end: dt.date, settings: Settings) -> pd.DataFrame:
    """The use case's labelled, point-in-time correct training set of days ``start..end``."""
    return get_use_case(settings).training_set(start, end, settings)


def resolve_windows(
    *,
    settings: Settings,
    train_start: str | None = None,
    train_end: str | None = None,
    holdout_start: str | None = None,
    holdout_end: str | None = None,
    as_of: str | None = None,
    train_days: int | None = None,
    holdout_days: int | None = None,
) -> Windows:
    """Windows from explicit dates, or defaults ending at ``as_of`` (else at the last label day),
    checked against the label delay and the labels actually ingested."""
    layout = StorageLayout(settings)
    through = labels_through(layout)
    if through is None:
        raise ValueError("labels: no labels partition in the lake; rule: ingest labels before training")
    delay = settings.case.label_delay_days
    holdout_days = holdout_days or settings.case.holdout_days
    if train_start or train_end:
        if not (train_start and train_end):
            raise ValueError("train window: give both --train-start and --train-end")
        ts, te = as_date(train_start), as_date(train_end)
        hs = as_date(holdout_start) if holdout_start else te + dt.timedelta(days=delay + 1)
        he = as_date(holdout_end) if holdout_end else hs + dt.timedelta(days=holdout_days - 1)
        windows = Windows(ts, te, hs, he)
    else:
        day = min(as_date(as_of), through) if as_of else through
        events = layout.partitions(get_use_case(settings).model.event_dataset or label_dataset(settings))
        windows = default_windows(
            day,
            train_days or settings.case.train_days,
            holdout_days,
            delay,
            events[0] if events else None,
        )
    check_protocol(windows, delay, labels_through=through)
    return windows


# --- the whole pipeline (CLI) ---------------------------------------------------------------------
def train_step(
    windows: Windows,
    params: TrainParams,
    *,
    hpo_trials: int = 0,
    reason: str = "manual",
    actor: str | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Step 1: the training set of the training window -> one MLflow run -> a registered challenger.
    Returns what the next step needs (JSON-ready: the train DAG passes it as XCom)."""
    settings = settings or get_settings()
    features, fs_version = feature_service_info(settings)
    train_df = load_training_set(windows.train_start, windows.train_end, settings)
    run = train_and_log(
        train_df,
        features,
        params,
        windows=windows,
        feature_service=settings.case.feature_service,
        feature_service_version=fs_version,
        hpo_trials=hpo_trials,
        reason=reason,
        actor=actor,
        settings=settings,
    )
    version = register(
        run, windows, settings.case.feature_service, fs_version, reason, actor, settings, train_df=train_df
    )
    return {"version": version, "run_id": run.run_id, "windows": windows.as_params()}


def gate_step(
    trained: Mapping[str, Any],
    *,
    margin: float | None = None,
    reason: str = "",
    actor: str | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Step 2: the challenger of :func:`train_step` and the champion on the same holdout -> the gate's
    decision (:meth:`GateOutcome.as_dict`)."""
    settings = settings or get_settings()
    windows = Windows.parse(trained["windows"])
    holdout = load_training_set(windows.holdout_start, windows.holdout_end, settings)
    outcome = evaluate_and_gate(
        trained["version"],
        trained["run_id"],
        holdout,
        margin=margin,
        reason=reason,
        actor=actor,
        settings=settings,
    )
    return outcome.as_dict()


def run_pipeline(
    windows: Windows,
    params: TrainParams,
    *,
    hpo_trials: int = 0,
    reason: str = "manual",
    actor: str | None = None,
    promote: bool = True,
    settings: Settings | None = None,
    margin: float | None = None,
) -> dict[str, Any]:
    """Train -> register challenger -> evaluate vs champion -> promote (if the gate passes): the same
    steps the ``<use case>_train_model`` DAG runs as tasks."""
    from jobs.platform import registry

    settings = settings or get_settings()
    trained = train_step(
        windows, params, hpo_trials=hpo_trials, reason=reason, actor=actor, settings=settings
    )
    result = gate_step(trained, margin=margin, reason=reason, actor=actor, settings=settings)
    result["promoted"] = False
    if result["promote"] and promote:
        promote_outcome(result, reason=reason, actor=actor, settings=settings)
        result["promoted"] = True
    result["champion"] = registry.champion_version(settings)
    return result


def register(
    run: TrainingRun,
    windows: Windows,
    feature_service: str,
    feature_service_version: str,
    reason: str,
    actor: str | None,
    settings: Settings,
    train_df: pd.DataFrame | None = None,
) -> str:
    """Register the run's model as the challenger; with ``train_df`` (the frame it was trained on) also
    write the version's monitoring reference, so monitoring never recomputes the training set."""
    from jobs.platform import registry

    version = registry.register_challenger(
        run.run_id,
        run.model_uri,
        reason=reason,
        actor=actor,
        tags={
            "feature_service": feature_service,
            "feature_service_version": feature_service_version,
            "features": json.dumps(run.features),
            "train_window": f"{windows.train_start}..{windows.train_end}",
            "data_sha256": run.data_sha256,
            "scale_pos_weight": f"{run.scale_pos_weight:.4f}",
            **(
                {get_use_case(settings).decision_tag: repr(run.decision_threshold)}
                if run.decision_threshold is not None
                else {}
            ),
        },
        metrics={
            "train_rows": run.train_rows,
            f"train_{model_spec(settings).positive}s": run.train_positives,
        },
        settings=settings,
    )
    if train_df is not None:
        from jobs.platform.monitor import build_reference, save_reference
        from jobs.platform.storage import StorageLayout

        save_reference(
            StorageLayout(settings), version, build_reference(train_df, run.model, settings=settings)
        )
    return version


def params_from_args(args: argparse.Namespace) -> TrainParams:
    return TrainParams(
        max_depth=args.max_depth,
        n_estimators=args.n_estimators,
        learning_rate=args.learning_rate,
        scale_pos_weight=args.scale_pos_weight,
        seed=args.seed,
    )


def build_parser() -> argparse.ArgumentParser:
    defaults = TrainParams()
    p = argparse.ArgumentParser(prog="python -m jobs.platform.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--train-start")
    p.add_argument("--train-end")
    p.add_argument("--holdout-start")
    p.add_argument("--holdout-end")
    p.add_argument("--as-of", help="default windows end at this day (default: the last label day)")
    p.add_argument("--train-days", type=int, default=None)
    p.add_argument("--holdout-days", type=int, default=None)
    p.add_argument("--hpo", type=int, default=0, help="number of search trials (0: no search)")
    p.add_argument("--max-depth", type=int, default=defaults.max_depth)
    p.add_argument("--n-estimators", type=int, default=defaults.n_estimators)
    p.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    p.add_argument(
        "--scale-pos-weight", default=defaults.scale_pos_weight, help="auto | sqrt | none | number"
    )
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--margin", type=float, default=None, help="gate margin on average precision")
    p.add_argument("--reason", default="manual run")
    p.add_argument("--actor", default=None)
    p.add_argument("--no-promote", action="store_true", help="stop after the gate decision")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = get_settings()
    windows = resolve_windows(
        settings=settings,
        train_start=args.train_start,
        train_end=args.train_end,
        holdout_start=args.holdout_start,
        holdout_end=args.holdout_end,
        as_of=args.as_of,
        train_days=args.train_days,
        holdout_days=args.holdout_days,
    )
    result = run_pipeline(
        windows,
        params_from_args(args),
        hpo_trials=args.hpo,
        reason=args.reason,
        actor=args.actor,
        promote=not args.no_promote,
        settings=settings,
        margin=args.margin,
    )
    print(json.dumps({"windows": windows.as_params(), **result}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
