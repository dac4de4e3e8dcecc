"""Daily batch scoring: every row of day D scored by the registry's champion, inside Spark.

For a logical date ``D``:

1. read the day's rows to score (``UseCase.scoring_rows``; fraud: ``lake/transactions/date=D``, the
   validated, deduplicated transactions), one per value of the use case's ``scoring_key``;
2. get their point-in-time correct features from the Feast offline store through the same feature
   service training uses (``UseCase.scoring_frame``; fraud: ``fraud_v3``, the entity frame is the
   day's transactions with ``event_timestamp = tx_datetime``, so every row sees the snapshot that was
   valid when it happened - exactly what online serving saw - plus the shared request-time features);
3. score in Spark with ``mapInPandas``: the model travels to the executors as its raw native bytes
   (``Booster.save_raw("ubj")``, broadcast once), each Python worker rebuilds the booster once and
   scores Arrow batches with ``inplace_predict``. Nothing is pickled and nothing is read from storage
   on the executors, so the same code scales out on a cluster unchanged;
4. write ``predictions/date=D`` (the key, score, decision, model_version, scored_at; ``decision`` =
   score >= the version's threshold tag, only for a use case with a decision policy) through a staged
   directory swapped in atomically: a re-run replaces the partition, never appends to it; the row
   count is checked against the input (nothing lost, nothing duplicated);
5. in the production profile publish the partition to S3 with :func:`jobs.platform.publish.publish_directory`
   (manifest written last; a re-run of the same date replaces it).

:func:`score_frame` is the pure scoring function (pandas in, pandas out) that the Spark path maps
over batches; tests and the benchmark call it directly.

CLI: ``python -m jobs.platform.batch_predict --date 2018-05-05 [--alias champion] [--no-publish]``, or
``spark-submit jobs/platform/batch_predict.py --date 2018-05-05`` against a cluster (``MLP_SPARK_MASTER``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # spark-submit jobs/platform/batch_predict.py: make `jobs` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
import pandas as pd

from jobs.platform.config import Settings, get_settings
from jobs.platform.logs import get_logger
from jobs.platform.storage import StorageLayout, as_date, staged_directory
from jobs.platform.use_case import get_use_case

OUTPUT_COLUMNS = ["score", "decision", "model_version", "scored_at"]  # after the use case's key


def prediction_columns(key: str, decides: bool = True) -> list[str]:
    """Columns of a predictions partition: the key, the score, the decision (with a policy), the version."""
    return [key, *(c for c in OUTPUT_COLUMNS if decides or c != "decision")]


def prediction_schema(key: str, key_type: str = "long", decides: bool = True) -> str:
    """The Spark DDL schema of the scored batches (``key_type``: the key column's Spark SQL type)."""
    types = {"score": "double", "decision": "int", "model_version": "string", "scored_at": "timestamp"}
    return ", ".join(
        [f"{key} {key_type}", *(f"{c} {types[c]}" for c in OUTPUT_COLUMNS if decides or c != "decision")]
    )


class BatchPredictError(RuntimeError):
    """The batch job cannot produce a complete, consistent partition (nothing was written)."""


# --- the model as bytes --------------------------------------------------------------------------


def booster_of(model: Any):
    """The native ``xgboost.Booster`` of an ``XGBClassifier`` (or the booster itself)."""
    return model.get_booster() if hasattr(model, "get_booster") else model


def model_to_raw(model: Any) -> bytes:
    """The model's native UBJSON bytes: what is broadcast to executors (never a pickle)."""
    return bytes(booster_of(model).save_raw(raw_format="ubj"))


_BOOSTERS: dict[str, Any] = {}


def booster_from_raw(raw: bytes):
    """Rebuild a booster from its raw bytes, once per Python worker process (cached by content hash)."""
    import xgboost as xgb

    digest = hashlib.sha256(raw).hexdigest()
    booster = _BOOSTERS.get(digest)
    if booster is None:
        booster = xgb.Booster(params={"nthread": 1})
        booster.load_model(bytearray(raw))
        _BOOSTERS.clear()  # one model per worker at a time
        _BOOSTERS[digest] = booster
    return booster


def feature_names_of(booster) -> list[str]:
    names = booster.feature_names
    if not names:
        raise BatchPredictError("model: has no feature names; rule: models are trained on named columns")
    return [str(n) for n in names]


# --- pure scoring ----------------------------------------------------------------------------------


def score_frame(
    frame: pd.DataFrame,
    booster,
    threshold: float | None,
    model_version: str,
    scored_at: dt.datetime | pd.Timestamp,
    feature_names: list[str] | None = None,
    key: str = "transaction_id",
) -> pd.DataFrame:
    """Score one batch: ``frame`` holds the key column and the model's feature columns (any order).

    Returns the prediction columns; ``decision`` is 1 (e.g. flag as fraud) when ``score >= threshold``,
    and absent when there is no threshold (a use case without a decision policy).
    """
    names = feature_names or feature_names_of(booster)
    missing = [c for c in [key, *names] if c not in frame.columns]
    if missing:
        raise BatchPredictError(f"scoring frame: missing column(s) {missing}; rule: model expects {names}")
    x = frame[names].to_numpy(dtype=np.float32, na_value=np.nan)
    scores = (
        booster.inplace_predict(x, validate_features=False).astype(np.float64)
        if len(frame)
        else np.empty(0, dtype=np.float64)
    )
    stamp = pd.Timestamp(scored_at)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    out = {
        key: frame[key].to_numpy(),
        "score": scores,
        **({"decision": (scores >= threshold).astype(np.int32)} if threshold is not None else {}),
        "model_version": str(model_version),
        "scored_at": pd.Series([stamp] * len(frame), dtype="datetime64[us]"),
    }
    return pd.DataFrame(out)


def score_spark(
    df,
    model_raw: bytes,
    threshold: float | None,
    model_version: str,
    scored_at: dt.datetime,
    feature_names: list[str],
    key: str = "transaction_id",
    key_type: str = "long",
):
    """Spark DataFrame with the key + features -> predictions, scored on the executors.

    The raw model bytes travel inside the scoring function (Spark ships a Python function once per
    stage, broadcast when large; this works in-process and over Spark Connect alike); ``mapInPandas``
    feeds Arrow batches to :func:`score_frame`.
    """
    names = list(feature_names)
    columns = [key, *names]
    raw = bytes(model_raw)

    def _score(batches):
        booster = booster_from_raw(raw)
        for batch in batches:
            yield score_frame(batch, booster, threshold, model_version, scored_at, names, key)

    schema = prediction_schema(key, key_type, decides=threshold is not None)
    return df.select(*columns).mapInPandas(_score, schema=schema)


# --- inputs ----------------------------------------------------------------------------------------


def read_rows(date: str | dt.date, settings: Settings | None = None) -> pd.DataFrame:
    """The rows of ``date`` to score (``UseCase.scoring_rows``, pandas: the Feast offline store takes a
    pandas entity frame), one per value of the use case's ``scoring_key``."""
    settings = settings or get_settings()
    use_case = get_use_case(settings)
    key = use_case.scoring_key
    try:
        frame = use_case.scoring_rows(as_date(date), settings)
    except FileNotFoundError as exc:
        raise BatchPredictError(f"{exc}; rule: ingest day {as_date(date)} first") from exc
    if key not in frame.columns:
        raise BatchPredictError(f"rows to score of {as_date(date)}: no column {key!r} (the scoring key)")
    dupes = int(frame[key].duplicated().sum())
    if dupes:
        raise BatchPredictError(
            f"rows to score of {as_date(date)}: {dupes} duplicated {key} values; rule: one row per {key}"
        )
    return frame


def _spark_type(dtype) -> str:
    return "long" if pd.api.types.is_integer_dtype(dtype) else "string"


def pit_features(transactions: pd.DataFrame, settings: Settings | None = None) -> pd.DataFrame:
    """Point-in-time features of the rows to score, as the use case assembles them from the Feast
    offline store (``UseCase.scoring_frame``: the same join its training set uses)."""
    settings = settings or get_settings()
    return get_use_case(settings).scoring_frame(transactions, settings)


def missing_inputs(date: str | dt.date, settings: Settings | None = None) -> list[str]:
    """Inputs of day ``date`` that do not exist yet (empty list = ready to score): the use case's
    ``scoring_inputs`` (fraud: the lake partition of D and the feature tables its rows join)."""
    settings = settings or get_settings()
    wanted = get_use_case(settings).scoring_inputs(as_date(date), StorageLayout(settings))
    return [str(p) for p in wanted if not p.is_dir()]


# --- the job ---------------------------------------------------------------------------------------


def run(
    date: str | dt.date,
    settings: Settings | None = None,
    alias: str = "champion",
    publish: bool | None = None,
    spark=None,
) -> dict[str, Any]:
    """Score day ``date`` and (re)write ``predictions/date=D``; publish to S3 in production."""
    from jobs.platform.registry import load_model
    from jobs.platform.spark import default_parallelism, get_spark

    settings = settings or get_settings()
    day = as_date(date)
    log = get_logger("batch_predict", day.isoformat())
    layout = StorageLayout(settings)
    started = time.monotonic()
    scored_at = dt.datetime.now(dt.UTC).replace(microsecond=0, tzinfo=None)

    model, version, threshold = load_model(alias, settings)  # threshold None: scores only, no decision
    key = get_use_case(settings).scoring_key
    raw = model_to_raw(model)
    names = feature_names_of(booster_from_raw(raw))
    log.info("model_loaded", alias=alias, model_version=version, threshold=threshold, model_bytes=len(raw))

    inputs = read_rows(day, settings)
    features = pit_features(inputs, settings)
    log.info("features_ready", rows=len(features), feature_service=settings.case.feature_service)

    spark = spark or get_spark("batch_predict", settings)
    parallelism = max(1, min(default_parallelism(spark, settings), len(features) // 50_000 + 1))
    sdf = spark.createDataFrame(features[[key, *names]]).repartition(parallelism)
    predictions = score_spark(
        sdf, raw, threshold, version, scored_at, names, key, _spark_type(inputs[key].dtype)
    )

    final = layout.path("predictions", day)
    with staged_directory(final) as tmp:
        predictions.write.mode("overwrite").parquet(str(tmp))
        written = spark.read.parquet(str(tmp))
        aggs = {key: "count", **({"decision": "sum"} if threshold is not None else {})}
        counts = written.agg(aggs).collect()[0]
        rows = int(counts[f"count({key})"])
        flagged = int(counts["sum(decision)"] or 0) if threshold is not None else None
        distinct = written.select(key).distinct().count()
        if rows != len(inputs) or distinct != rows:
            raise BatchPredictError(
                f"predictions for {day}: {rows} rows ({distinct} distinct {key}) for {len(inputs)} "
                f"rows to score; rule: one prediction per {key}"
            )
    summary: dict[str, Any] = {
        "date": day.isoformat(),
        "path": str(final),
        "rows": rows,
        "flagged": flagged,
        "model_version": version,
        "threshold": threshold,
        "alias": alias,
        "scored_at": scored_at.isoformat(),
        "seconds": round(time.monotonic() - started, 2),
    }
    if publish if publish is not None else settings.publishes_to_s3:
        from jobs.platform.publish import publish_directory

        manifest = publish_directory(
            final,
            layout.s3_uri("predictions", day),
            settings,
            overwrite=True,  # this run IS the re-run of the same date
            metadata={
                "date": day.isoformat(),
                "dataset": "predictions",
                "model_version": version,
                "threshold": threshold,
                "rows": rows,
            },
        )
        summary["published"] = manifest["uri"]
        summary["generation"] = manifest["generation"]
    log.info("predictions_written", **{k: v for k, v in summary.items() if k != "date"})
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.platform.batch_predict", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--date", required=True, help="logical date YYYY-MM-DD (the day to score)")
    parser.add_argument("--alias", default="champion", choices=["champion", "challenger"])
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--publish", dest="publish", action="store_true", default=None, help="force S3 publish"
    )
    group.add_argument("--no-publish", dest="publish", action="store_false", help="never publish to S3")
    args = parser.parse_args(argv)
    summary = run(args.date, alias=args.alias, publish=args.publish)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
