"""Batch scoring throughput: this job's Spark path vs ``mlflow.pyfunc.spark_udf`` vs in-process xgboost.

One run, one model, one data set (``python -m benchmarks.batch_predict [--rows N]``):

* data: a SYNTHETIC feature matrix with the real model inputs (``jobs.fraud.training_data.FEATURE_COLUMNS``,
  counts as integers, amounts log-normal, risks in [0, 1]) plus ``transaction_id``, written once as
  parquet; synthetic because scoring throughput depends on the matrix shape and the model, not on
  where the values came from (and 5 million rows of simulated history would take far longer to build);
* model: an ``XGBClassifier`` (100 trees, depth 6) fitted on a 50k-row slice with a synthetic label,
  saved in MLflow's native xgboost format with a signature (what the registry holds);
* (a) ``jobs.platform.batch_predict.score_spark``: Spark reads the parquet, ``mapInPandas`` scores Arrow
  batches with the booster rebuilt from broadcast raw bytes;
* (b) ``mlflow.pyfunc.spark_udf`` (env_manager="local") on the same model directory and DataFrame;
* (c) ``Booster.inplace_predict`` over the whole in-memory matrix, all cores: the limit (no I/O, no
  serialisation, no Spark).

Spark paths run against the noop sink (full evaluation, nothing written) after a 100k-row warm-up;
the three outputs are compared on a sample to make sure they computed the same scores.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def synthetic_features(rows: int, columns: list[str], seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    data: dict[str, np.ndarray] = {"transaction_id": np.arange(rows, dtype=np.int64)}
    for name in columns:
        if name == "tx_amount" or "avg_amount" in name:
            data[name] = rng.lognormal(3.5, 1.0, rows).astype(np.float32)
        elif name.startswith("tx_during"):
            data[name] = (rng.random(rows) < 0.3).astype(np.float32)
        elif "_nb_tx_" in name:
            window = int(name.rsplit("_", 1)[1].rstrip("d"))
            data[name] = rng.poisson(2.0 * window, rows).astype(np.float32)
        else:  # risks: mostly 0, sometimes high
            data[name] = np.where(rng.random(rows) < 0.05, rng.random(rows), 0.0).astype(np.float32)
    return pd.DataFrame(data)


def fit_model(frame: pd.DataFrame, columns: list[str], trees: int, depth: int):
    import xgboost as xgb

    rng = np.random.default_rng(1)
    x = frame[columns]
    risk = [c for c in columns if "risk" in c]
    logit = 0.01 * (x["tx_amount"] - 60) + 4 * x[risk].sum(axis=1) + rng.normal(0, 1, len(x)) - 3
    y = (logit > 0).astype(int)
    model = xgb.XGBClassifier(n_estimators=trees, max_depth=depth, learning_rate=0.2, n_jobs=os.cpu_count())
    model.fit(x, y)
    return model


def rate(rows: int, seconds: float) -> str:
    return f"{rows / seconds:>14,.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.batch_predict", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--trees", type=int, default=100)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--files", type=int, default=8, help="parquet files the matrix is split into")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    os.environ.setdefault("MLP_HOME", str(work / "home"))  # never touch a developer's .platform

    import mlflow.pyfunc
    import mlflow.xgboost
    from mlflow.models import infer_signature
    from pyspark.sql import functions as F

    from jobs.fraud.training_data import FEATURE_COLUMNS
    from jobs.platform.batch_predict import booster_from_raw, model_to_raw, score_spark
    from jobs.platform.config import get_settings
    from jobs.platform.spark import get_spark

    settings = get_settings()
    columns = list(FEATURE_COLUMNS)
    try:
        t0 = time.monotonic()
        frame = synthetic_features(args.rows, columns)
        data_dir = work / "features"
        data_dir.mkdir()
        for i, chunk in enumerate(np.array_split(np.arange(args.rows), args.files)):
            frame.iloc[chunk[0] : chunk[-1] + 1].to_parquet(data_dir / f"part-{i:05d}.parquet", index=False)
        print(
            f"data: {args.rows:,} rows x {len(columns)} features, {args.files} parquet files "
            f"({sum(p.stat().st_size for p in data_dir.iterdir()) / 2**20:.0f} MiB), {time.monotonic() - t0:.1f}s"
        )

        t0 = time.monotonic()
        model = fit_model(frame.iloc[:50_000], columns, args.trees, args.depth)
        booster = model.get_booster()
        model_dir = work / "model"
        sample = frame[columns].iloc[:5]
        mlflow.xgboost.save_model(
            booster, str(model_dir), signature=infer_signature(sample, booster.inplace_predict(sample))
        )
        raw = model_to_raw(model)
        print(
            f"model: {args.trees} trees, depth {args.depth}, {len(raw) / 1024:.0f} KiB raw, fit {time.monotonic() - t0:.1f}s"
        )

        results: list[tuple[str, float]] = []

        # (c) the limit: one in-process predict over the whole matrix, all cores
        x = frame[columns].to_numpy(dtype=np.float32)
        booster.set_param({"nthread": os.cpu_count()})
        booster.inplace_predict(x[:100_000])  # warm-up
        t0 = time.monotonic()
        limit_scores = booster.inplace_predict(x)
        results.append(("(c) in-process xgboost inplace_predict", time.monotonic() - t0))
        del x

        spark = get_spark("bench-batch-predict", settings)
        cores = spark.sparkContext.defaultParallelism
        df = spark.read.parquet(str(data_dir))
        scored_at = dt.datetime(2018, 5, 1)

        def job(source):
            return score_spark(source, raw, 0.5, "bench", scored_at, columns)

        udf = mlflow.pyfunc.spark_udf(
            spark, model_uri=str(model_dir), result_type="double", env_manager="local"
        )

        def mlflow_udf(source):
            return source.select("transaction_id", udf(F.struct(*[F.col(c) for c in columns])).alias("score"))

        for label, build in (
            ("(a) this job: score_spark (mapInPandas)", job),
            ("(b) mlflow.pyfunc.spark_udf", mlflow_udf),
        ):
            build(df.limit(100_000)).write.format("noop").mode("overwrite").save()  # warm-up
            t0 = time.monotonic()
            build(df).write.format("noop").mode("overwrite").save()
            results.append((label, time.monotonic() - t0))

        # same scores from all three (sample of rows)
        probe = df.where(F.col("transaction_id") % 50_000 == 0)
        a = job(probe).select("transaction_id", "score").toPandas().sort_values("transaction_id")
        b = mlflow_udf(probe).toPandas().sort_values("transaction_id")
        c = limit_scores[a["transaction_id"].to_numpy()]
        np.testing.assert_allclose(a["score"].to_numpy(), c, atol=1e-6)
        np.testing.assert_allclose(b["score"].to_numpy(), c, atol=1e-6)
        assert booster_from_raw(raw).num_boosted_rounds() == args.trees

        print(
            f"\nscoring {args.rows:,} rows; Spark {settings.spark_master} ({cores} cores), "
            f"host {os.cpu_count()} cores; scores agree on {len(a)} probe rows\n"
        )
        print(f"{'path':<44}{'seconds':>10}{'rows/s':>16}{'vs limit':>10}")
        limit = results[0][1]
        for label, seconds in results:
            print(f"{label:<44}{seconds:>10.2f}{rate(args.rows, seconds)}{limit / seconds:>10.2f}")
        job_s = dict(results)["(a) this job: score_spark (mapInPandas)"]
        udf_s = dict(results)["(b) mlflow.pyfunc.spark_udf"]
        print(f"\nthis job vs mlflow spark_udf: {udf_s / job_s:.2f}x")
        spark.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
