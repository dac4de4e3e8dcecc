"""Daily batch scoring: every transaction of day D scored by the registry's champion, inside Spark.

For a logical date ``D``:

1. read ``lake/transactions/date=D`` (the validated, deduplicated transactions);
2. get their point-in-time correct features from the Feast offline store through the same feature
   service training uses (``settings.case.feature_service``, ``fraud_v2``): the entity frame is the day's
   transactions with ``event_timestamp = tx_datetime``, so every row sees the snapshot that was valid
   when it happened - exactly what online serving saw - plus the shared request-time features
   (the use case's request-time features);
3. score in Spark with ``mapInPandas``: the model travels to the executors as its raw native bytes
   (``Booster.save_raw("ubj")``, broadcast once), each Python worker rebuilds the booster once and
   scores Arrow batches with ``inplace_predict``. Nothing is pickled and nothing is read from storage
   on the executors, so the same code scales out on a cluster unchanged;
4. write ``predictions/date=D`` (transaction_id, score, decision, model_version, scored_at) through a
   staged directory swapped in atomically: a re-run replaces the partition, never appends to it; the
   row count is checked against the input (nothing lost, nothing duplicated);
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

PREDICTION_COLUMNS = ["transaction_id", "score", "decision", "model_version", "scored_at"]
PREDICTION_SCHEMA = (
    "transaction_id long, score double, decision int, model_version string, scored_at timestamp"
)
TRANSACTION_COLUMNS = ["transaction_id", "tx_datetime", "customer_id", "terminal_id", "tx_amount"]


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
    threshold: float,
    model_version: str,
    scored_at: dt.datetime | pd.Timestamp,
    feature_names: list[str] | None = None,
) -> pd.DataFrame:
    """Score one batch: ``frame`` holds transaction_id and the model's feature columns (any order).

    Returns the prediction columns; ``decision`` is 1 (flag as fraud) when ``score >= threshold``.
    """
    names = feature_names or feature_names_of(booster)
    missing = [c for c in ["transaction_id", *names] if c not in frame.columns]
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
    return pd.DataFrame(
        {
            "transaction_id": frame["transaction_id"].to_numpy(dtype=np.int64),
            "score": scores,
            "decision": (scores >= threshold).astype(np.int32),
            "model_version": str(model_version),
            "scored_at": pd.Series([stamp] * len(frame), dtype="datetime64[us]"),
        }
    )


def score_spark(
    df,
    model_raw: bytes,
    threshold: float,
    model_version: str,
    scored_at: dt.datetime,
    feature_names: list[str],
):
    """Spark DataFrame with transaction_id + features -> predictions, scored on the executors.

    The raw model bytes travel inside the scoring function (Spark ships a Python function once per
    stage, broadcast when large; this works in-process and over Spark Connect alike); ``mapInPandas``
    feeds Arrow batches to :func:`score_frame`.
    """
    names = list(feature_names)
    columns = ["transaction_id", *names]
    raw = bytes(model_raw)

    def _score(batches):
        booster = booster_from_raw(raw)
        for batch in batches:
            yield score_frame(batch, booster, threshold, model_version, scored_at, names)

    return df.select(*columns).mapInPandas(_score, schema=PREDICTION_SCHEMA)


# --- inputs ----------------------------------------------------------------------------------------


def read_transactions(date: str | dt.date, settings: Settings | None = None) -> pd.DataFrame:
    """The lake partition of ``date`` (pandas; the Feast offline store takes a pandas entity frame)."""
    layout = StorageLayout(settings or get_settings())
    path = layout.path("transactions", date)
    if not path.exists():
        raise BatchPredictError(
            f"transactions partition {path} does not exist; rule: ingest day {as_date(date)} first"
        )
    frame = pd.read_parquet(path, columns=TRANSACTION_COLUMNS)
    dupes = int(frame["transaction_id"].duplicated().sum())
    if dupes:
        raise BatchPredictError(
            f"{path}: {dupes} duplicated transaction_id values; rule: the lake is deduplicated"
        )
    return frame


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

    model, version, threshold = load_model(alias, settings)
    if threshold is None:  # TODO(issue 13): scores-only predictions for a use case without a decision policy
        raise BatchPredictError(
            f"use case {settings.use_case!r}: no decision_tag; rule: batch scoring writes a decision per row"
        )
    raw = model_to_raw(model)
    names = feature_names_of(booster_from_raw(raw))
    log.info("model_loaded", alias=alias, model_version=version, threshold=threshold, model_bytes=len(raw))

    transactions = read_transactions(day, settings)
    features = pit_features(transactions, settings)
    log.info("features_ready", rows=len(features), feature_service=settings.case.feature_service)

    spark = spark or get_spark("batch_predict", settings)
    parallelism = max(1, min(default_parallelism(spark, settings), len(features) // 50_000 + 1))
    sdf = spark.createDataFrame(features[["transaction_id", *names]]).repartition(parallelism)
    predictions = score_spark(sdf, raw, threshold, version, scored_at, names)

    final = layout.path("predictions", day)
    with staged_directory(final) as tmp:
        predictions.write.mode("overwrite").parquet(str(tmp))
        written = spark.read.parquet(str(tmp))
        counts = written.agg({"transaction_id": "count", "decision": "sum"}).collect()[0]
        rows, flagged = int(counts[0]), int(counts[1] or 0)
        distinct = written.select("transaction_id").distinct().count()
        if rows != len(transactions) or distinct != rows:
            raise BatchPredictError(
                f"predictions for {day}: {rows} rows ({distinct} distinct ids) for {len(transactions)} "
                "transactions; rule: one prediction per transaction"
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
