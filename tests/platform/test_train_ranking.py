"""The core trains a learning-to-rank model when a use case declares a rank:* objective (XGBRanker
over query groups), and the registry scores it like any other model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from jobs.platform import metrics as M
from jobs.platform.params import TrainParams
from jobs.platform.train import candidate_params, fit_model, in_sample_metrics, search_grid
from jobs.platform.use_case import ModelSpec

RANKER = ModelSpec(
    objective="rank:ndcg",
    eval_metric="ndcg@10",
    label="clicked",
    time_column="shown_at",
    row_id="impression_id",
    group="request_id",
    position="slot",
    positive="click",
    xgb_params={"lambdarank_pair_method": "topk", "lambdarank_num_pair_per_sample": 10},
)


def queries(n_queries=300, per_query=20, seed=0) -> pd.DataFrame:
    """Each query's candidates; relevance grows with f0, f1 is noise; rows shuffled across queries."""
    rng = np.random.default_rng(seed)
    n = n_queries * per_query
    f0, f1 = rng.normal(size=n), rng.normal(size=n)
    frame = pd.DataFrame(
        {
            "impression_id": np.arange(n),
            "request_id": np.repeat([f"r{i:04d}" for i in range(n_queries)], per_query),
            "slot": np.tile(np.arange(per_query), n_queries),
            "shown_at": pd.Timestamp("2024-01-01"),
            "f0": f0,
            "f1": f1,
            "clicked": (f0 + 0.5 * rng.normal(size=n) > 1.2).astype(int),
        }
    )
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def test_model_spec_flavours():
    assert (
        RANKER.ranker
        and not ModelSpec(
            objective="binary:logistic", eval_metric="aucpr", label="y", time_column="t", row_id="id"
        ).ranker
    )
    with pytest.raises(ValueError, match="model.group"):
        ModelSpec(objective="rank:ndcg", eval_metric="ndcg@10", label="y", time_column="t", row_id="id")
    with pytest.raises(ValueError, match="model.objective"):
        ModelSpec(objective="reg:squarederror", eval_metric="rmse", label="y", time_column="t", row_id="id")
    with pytest.raises(ValueError, match="model.group"):
        ModelSpec(
            objective="binary:logistic", eval_metric="auc", label="y", time_column="t", row_id="id", group="q"
        )
    assert "scale_pos_weight" not in search_grid(RANKER)
    cands = candidate_params(TrainParams(), 4, 0, search_grid(RANKER))
    assert len({c.scale_pos_weight for c in cands}) == 1


def test_ranker_learns_the_order_within_queries():
    train, test = queries(seed=1), queries(n_queries=200, seed=2)
    params = TrainParams(n_estimators=60, max_depth=3, learning_rate=0.1, n_jobs=1)
    model, spw = fit_model(train, ["f0", "f1"], params, RANKER)
    assert type(model).__name__ == "XGBRanker" and spw == 1.0
    from jobs.platform.registry import predict_scores

    scores = predict_scores(model, test)
    learned = M.ndcg_at_k(test["request_id"], test["clicked"], scores, 10)
    random = M.ndcg_at_k(test["request_id"], test["clicked"], np.random.default_rng(0).random(len(test)), 10)
    assert learned > 0.9 > random + 0.3, (learned, random)
    figures = in_sample_metrics(train, predict_scores(model, train), RANKER)
    assert figures["train_ndcg_at_10_in_sample"] > 0.9 and 0 < figures["train_mrr_in_sample"] <= 1


def test_position_debiasing_fits_on_logged_slots():
    spec = ModelSpec(**{**RANKER.__dict__, "xgb_params": {"lambdarank_unbiased": True}})
    frame = queries(seed=3)
    examined = np.array([0.68, 0.61, 0.48, 0.34, 0.28, 0.20, 0.11, 0.10, 0.08, 0.06] + [0.05] * 10)
    rng = np.random.default_rng(4)
    frame["clicked"] = frame["clicked"] & (rng.random(len(frame)) < examined[frame["slot"]])
    model, _ = fit_model(frame, ["f0", "f1"], TrainParams(n_estimators=30, n_jobs=1), spec)
    import json

    config = json.loads(model.get_booster().save_config())["learner"]["objective"]["lambdarank_param"]
    assert config["lambdarank_unbiased"] == "1"


def test_a_ranker_without_its_group_column_is_refused():
    with pytest.raises(ValueError, match="request_id"):
        fit_model(queries().drop(columns="request_id"), ["f0", "f1"], TrainParams(n_jobs=1), RANKER)
    no_clicks = queries().assign(clicked=0)
    with pytest.raises(ValueError, match="0 clicks"):
        fit_model(no_clicks, ["f0", "f1"], TrainParams(n_jobs=1), RANKER)


def test_a_logged_ranker_round_trips_through_mlflow(settings, tmp_path):
    import mlflow
    import mlflow.xgboost

    from jobs.platform import registry

    registry.configure_mlflow(settings, "ranking-roundtrip")
    frame = queries(seed=5)
    model, _ = fit_model(frame, ["f0", "f1"], TrainParams(n_estimators=20, n_jobs=1), RANKER)
    with mlflow.start_run():
        info = mlflow.xgboost.log_model(
            model, name="model", model_format="ubj", input_example=frame[["f0", "f1"]].head(3)
        )
    loaded = mlflow.xgboost.load_model(info.model_uri)
    assert type(loaded).__name__ == "XGBRanker"
    np.testing.assert_allclose(
        registry.predict_scores(loaded, frame), registry.predict_scores(model, frame), rtol=1e-6
    )
