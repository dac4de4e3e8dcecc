"""Training: imbalance handling, data fingerprint, time-ordered validation and search, windows."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from jobs.platform import train as T
from jobs.platform.config import Settings
from jobs.platform.evaluate import Windows
from jobs.platform.storage import StorageLayout, as_date
from tests.support.training import FEATURES, SMALL, WINDOWS, fresh_home, simulated_frame


@pytest.fixture(scope="module")
def train_df():
    return simulated_frame(WINDOWS.train_start, WINDOWS.train_end)


def test_scale_pos_weight_strategies():
    y = np.array([0] * 90 + [1] * 10)
    assert T.resolve_scale_pos_weight(y, "auto") == 9.0
    assert T.resolve_scale_pos_weight(y, "sqrt") == 3.0
    assert T.resolve_scale_pos_weight(y, "none") == 1.0
    assert T.resolve_scale_pos_weight(y, "2.5") == 2.5
    with pytest.raises(ValueError, match="scale_pos_weight: value 'lots' is invalid"):
        T.resolve_scale_pos_weight(y, "lots")
    with pytest.raises(ValueError, match="0 frauds"):
        T.resolve_scale_pos_weight(np.zeros(5), "auto")


def test_data_fingerprint_ignores_row_order_but_not_content(train_df):
    h = T.data_fingerprint(train_df, FEATURES)
    assert h == T.data_fingerprint(train_df.sample(frac=1.0, random_state=1), FEATURES)
    flipped = train_df.copy()
    flipped.loc[flipped.index[0], "tx_fraud"] = 1 - flipped.loc[flipped.index[0], "tx_fraud"]
    assert T.data_fingerprint(flipped, FEATURES) != h
    assert T.data_fingerprint(train_df, FEATURES[:-1]) != h


def test_validation_split_is_time_ordered_with_a_gap(train_df):
    fit, val, window = T.split_validation(train_df, val_days=3, gap_days=7)
    assert window == {"fit_end": "2018-04-11", "val_start": "2018-04-19", "val_end": "2018-04-21"}
    # 7 whole days (04-12..04-18) between the fit days and the validation days
    assert fit["tx_datetime"].max() < dt.datetime(2018, 4, 12)
    assert val["tx_datetime"].min() >= dt.datetime(2018, 4, 19)
    with pytest.raises(ValueError, match="too short"):
        T.split_validation(train_df, val_days=7, gap_days=7)


def test_an_older_fold_shifts_the_split_back_and_keeps_its_fit_length(train_df):
    fit, val, window = T.split_validation(train_df, val_days=3, gap_days=2, shift_days=3, fit_days=4)
    assert window == {"fit_end": "2018-04-13", "val_start": "2018-04-16", "val_end": "2018-04-18"}
    assert sorted(fit["tx_datetime"].dt.date.unique()) == [dt.date(2018, 4, d) for d in range(10, 14)]
    assert sorted(val["tx_datetime"].dt.date.unique()) == [dt.date(2018, 4, d) for d in range(16, 19)]


def test_neighbours_move_one_parameter_one_grid_step():
    grid = {"max_depth": [3, 4, 5], "learning_rate": [0.05, 0.1], "scale_pos_weight": ["auto", "none"]}
    base = T.TrainParams(max_depth=4, learning_rate=0.05, scale_pos_weight="auto")
    got = {(p.max_depth, p.learning_rate, p.scale_pos_weight) for p in T.neighbours(base, grid)}
    assert got == {(3, 0.05, "auto"), (5, 0.05, "auto"), (4, 0.1, "auto"), (4, 0.05, "none")}
    off_grid = T.TrainParams(max_depth=9, learning_rate=0.1, scale_pos_weight="none")
    got = {(p.max_depth, p.learning_rate, p.scale_pos_weight) for p in T.neighbours(off_grid, grid)}
    assert got == {(9, 0.05, "none"), (9, 0.1, "auto")}  # depth 9 is not in the grid: it stays


def test_proposals_explore_at_random_then_refine_around_the_best():
    """Half the budget drawn at random (the base first), then the best's untried neighbours, re-read
    after each trial; a config is never proposed twice, and a grid smaller than the budget ends."""
    grid = {"max_depth": [3, 4, 5, 6], "learning_rate": [0.05, 0.1, 0.3]}
    base = T.TrainParams(max_depth=6, learning_rate=0.3)
    score = {(d, r): -abs(d - 4) - abs(r - 0.1) for d in grid["max_depth"] for r in grid["learning_rate"]}
    tried: list[T.TrainParams] = []

    def ranked() -> list[T.TrainParams]:
        return sorted(tried, key=lambda p: -score[(p.max_depth, p.learning_rate)])

    steps = []
    for phase, params in T.proposals(base, 8, 0, grid, ranked):
        steps.append(phase)
        tried.append(params)
    assert steps == ["random"] * 4 + ["refine"] * 4
    assert tried[0] == base and tried[:4] == T.candidate_params(base, 4, 0, grid)
    assert len(set(map(repr, tried))) == 8
    assert (4, 0.1) in {(p.max_depth, p.learning_rate) for p in tried}  # the optimum is climbed to
    for params in tried[4:]:  # each refinement is a neighbour of a configuration tried before it
        assert any(params in T.neighbours(p, grid) for p in tried[: tried.index(params)])
    everything = list(T.proposals(base, 50, 0, grid, lambda: []))
    assert len(everything) == 12 and len({repr(p) for _, p in everything}) == 12


def test_prequential_search_ranks_by_the_mean_over_folds(train_df, tmp_path_factory):
    """Three folds two days apart, each fitted on 4 days: a trial's figure is the mean of its
    folds' (the latest first), and the best mean wins."""
    import mlflow

    from jobs.platform import registry

    settings = fresh_home(tmp_path_factory, "fraud-folds-test")
    registry.configure_mlflow(settings, "folds-test")
    with mlflow.start_run():
        best, table = T.search_hyperparameters(
            train_df, FEATURES, SMALL, 3, val_days=2, gap_days=2, settings=settings, folds=3, fit_days=4
        )
    folds = [f"val_average_precision_fold{k}" for k in range(3)]
    assert set(folds) <= set(table.columns) and len(table) == 3
    np.testing.assert_allclose(table["val_average_precision"], table[folds].mean(axis=1))
    assert table["val_average_precision"].is_monotonic_decreasing
    assert best.max_depth == table.iloc[0]["max_depth"]
    assert table[folds].nunique().gt(1).any()  # the folds are different weeks, not one copied
    with pytest.raises(ValueError, match="folds: 0"):
        T.search_hyperparameters(
            train_df, FEATURES, SMALL, 2, val_days=2, gap_days=2, settings=settings, folds=0
        )


def test_search_logs_nested_trials_and_refits_the_best(train_df, tmp_path_factory):
    settings = fresh_home(tmp_path_factory, "fraud-hpo-test")
    run = T.train_and_log(
        train_df,
        FEATURES,
        SMALL,
        windows=WINDOWS,
        feature_service="test-local",
        feature_service_version="0",
        hpo_trials=3,
        val_days=3,
        settings=settings,
    )
    from jobs.platform import registry

    client = registry.client(settings)
    parent = client.get_run(run.run_id)
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run.run_id}'"
    )
    assert len(children) == 3
    best = max(children, key=lambda r: r.data.metrics["val_average_precision"])
    assert parent.data.metrics["val_average_precision"] == pytest.approx(
        best.data.metrics["val_average_precision"]
    )
    for key in T.SEARCH_GRID:  # depth, trees, rate, min_child_weight, subsample, imbalance strategy, bins
        assert parent.data.params[key] == best.data.params[key]
        assert str(getattr(run.params, key)) == best.data.params[key]
    assert all(c.data.params["val_start"] == "2018-04-19" for c in children)
    assert "hpo/trials.csv" in {a.path for a in client.list_artifacts(run.run_id, "hpo")}


def test_explanations_are_xgboosts_own_and_logged(train_df, tmp_path_factory):
    """Importances of every type and a TreeSHAP summary from ``pred_contribs``: per row the
    contributions and the bias sum to the margin; a feature the trees never split on has 0 of both;
    the run carries the tables, the plot and the top features."""
    import xgboost as xgb

    frame = train_df.assign(constant=1.0)  # never split on
    features = [*FEATURES, "constant"]
    model, _ = T.fit_model(frame, features, SMALL)
    importance, shap, contribs = T.explain_model(model, frame, features, sample=400)
    margin = model.get_booster().predict(
        xgb.DMatrix(frame[features].astype("float64").sample(400, random_state=0)), output_margin=True
    )
    assert contribs.shape == (400, len(features) + 1)
    np.testing.assert_allclose(contribs.sum(axis=1), margin, rtol=1e-4, atol=1e-4)
    assert list(importance["feature"]) == features and set(T.IMPORTANCE_TYPES) <= set(importance.columns)
    const = shap.set_index("feature").loc["constant"]
    assert const["mean_abs_shap"] == 0 and importance.set_index("feature").loc["constant", "gain"] == 0
    assert shap["mean_abs_shap"].is_monotonic_decreasing and shap["share_of_abs_shap"].sum() == pytest.approx(
        1
    )
    settings = fresh_home(tmp_path_factory, "fraud-explain-test")
    run = T.train_and_log(
        train_df,
        FEATURES,
        SMALL,
        windows=WINDOWS,
        feature_service="test-local",
        feature_service_version="0",
        settings=settings,
    )
    from jobs.platform import registry

    client = registry.client(settings)
    logged = {a.path for a in client.list_artifacts(run.run_id, "explain")}
    assert logged == {"explain/importance.csv", "explain/shap_summary.csv"}
    assert "plots/shap_summary.png" in {a.path for a in client.list_artifacts(run.run_id, "plots")}
    top = client.get_run(run.run_id).data.tags["top_features"].split(",")
    assert len(top) == 5 and set(top) <= set(FEATURES)


def test_training_refuses_rows_outside_its_window(train_df, tmp_path):
    narrow = Windows(as_date("2018-04-10"), as_date("2018-04-12"), WINDOWS.holdout_start, WINDOWS.holdout_end)
    with pytest.raises(ValueError, match="outside the window"):
        T.train_and_log(
            train_df,
            FEATURES,
            SMALL,
            windows=narrow,
            feature_service="x",
            feature_service_version="0",
            settings=Settings(home=tmp_path),
        )


def test_resolve_windows_from_the_labels_in_the_lake(tmp_path):
    settings = Settings(home=tmp_path, case={"train_days": 14, "holdout_days": 7})
    with pytest.raises(ValueError, match="no labels partition"):
        T.resolve_windows(settings=settings)
    layout = StorageLayout(settings)
    for i in range(35):  # 2018-04-01 .. 2018-05-05
        day = dt.date(2018, 4, 1) + dt.timedelta(days=i)
        layout.path("transactions", day).mkdir(parents=True)
        layout.path("labels", day).mkdir(parents=True)
    w = T.resolve_windows(settings=settings)
    assert w.as_params() == {
        "train_start": "2018-04-01",  # 14 days wanted, clipped at the first day of data
        "train_end": "2018-04-14",
        "holdout_start": "2018-04-22",
        "holdout_end": "2018-04-28",
    }
    assert T.resolve_windows(settings=settings, as_of="2018-05-01").holdout_end == as_date("2018-04-24")
    pinned = T.resolve_windows(settings=settings, train_start="2018-04-03", train_end="2018-04-09")
    assert (pinned.holdout_start, pinned.holdout_end) == (as_date("2018-04-17"), as_date("2018-04-23"))
    with pytest.raises(ValueError, match="holdout_start: value 2018-04-12 is 2 day"):
        T.resolve_windows(
            settings=settings, train_start="2018-04-03", train_end="2018-04-09", holdout_start="2018-04-12"
        )
    with pytest.raises(ValueError, match="immature labels"):
        T.resolve_windows(settings=settings, train_start="2018-04-03", train_end="2018-04-20")
