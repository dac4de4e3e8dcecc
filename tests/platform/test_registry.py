"""The champion/challenger gate and the registry's audit trail, on a real MLflow (SQLite) registry.

Data: a small simulated world (400 customers) with simple test-local features computed in pandas
(the feature store has its own tests; these tests are about training, the gate and the registry).
Every test uses its own platform home, so the registry state is private to this module.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from jobs.platform import registry
from jobs.platform import train as T
from jobs.platform.config import Settings
from tests.support.training import FEATURES, SMALL, WINDOWS, fresh_home, simulated_frame


@pytest.fixture(scope="module")
def frames():
    return (
        simulated_frame(WINDOWS.train_start, WINDOWS.train_end),
        simulated_frame(WINDOWS.holdout_start, WINDOWS.holdout_end),
    )


@pytest.fixture(scope="module")
def home_settings(tmp_path_factory) -> Settings:
    return fresh_home(tmp_path_factory, "fraud-gate-test")


def _train_register(settings, train_df, reason, params=SMALL, actor="pytest"):
    run = T.train_and_log(
        train_df,
        FEATURES,
        params,
        windows=WINDOWS,
        feature_service="test-local",
        feature_service_version="0",
        reason=reason,
        actor=actor,
        settings=settings,
    )
    version = T.register(run, WINDOWS, "test-local", "0", reason, actor, settings)
    return run, version


def test_worse_challenger_is_refused_and_the_champion_stays(frames, home_settings, monkeypatch):
    import mlflow

    settings = home_settings
    train_df, holdout = frames
    assert train_df["tx_fraud"].sum() > 50 and holdout["tx_fraud"].sum() > 50

    run1, v1 = _train_register(settings, train_df, "first model")
    first = T.evaluate_and_gate(
        v1, run1.run_id, holdout, reason="first model", actor="pytest", settings=settings
    )
    assert first.decision.promote and first.champion is None, first.decision.reason
    T.promote_outcome(first.as_dict(), reason="first model", actor="pytest", settings=settings)
    assert registry.champion_version(settings) == v1

    # a deliberately worse challenger: same features, labels shuffled
    shuffled = train_df.assign(tx_fraud=np.random.default_rng(0).permutation(train_df["tx_fraud"].to_numpy()))
    run2, v2 = _train_register(settings, shuffled, "shuffled labels")
    assert registry.alias_version("challenger", settings) == v2
    worse = T.evaluate_and_gate(
        v2, run2.run_id, holdout, reason="shuffled", actor="pytest", settings=settings
    )
    assert not worse.decision.promote
    assert worse.champion is not None and worse.champion_version == v1
    assert worse.champion.metrics["rows"] == worse.challenger.metrics["rows"] == len(holdout)  # same holdout
    failed = {c["check"] for c in worse.decision.failed()}
    assert "primary.average_precision" in failed
    assert worse.challenger.metrics["average_precision"] < first.challenger.metrics["average_precision"]
    assert registry.champion_version(settings) == v1  # the champion stays
    with pytest.raises(ValueError, match="the gate refused it"):
        T.promote_outcome(worse.as_dict(), reason="x", actor="pytest", settings=settings)

    # the same training data and params again: identical AP is not "better" (margin 0, strict)
    run3, v3 = _train_register(settings, train_df, "retrain, nothing new")
    again = T.evaluate_and_gate(v3, run3.run_id, holdout, reason="same", actor="pytest", settings=settings)
    assert again.challenger.metrics["average_precision"] == pytest.approx(
        again.champion.metrics["average_precision"]
    )
    assert not again.decision.promote

    entries = registry.history(settings)
    assert [(e["action"], e["version"]) for e in entries] == [
        ("challenger", v1),
        ("promote", v1),
        ("challenger", v2),
        ("refuse", v2),
        ("challenger", v3),
        ("refuse", v3),
    ]
    refuse = entries[3]
    assert (
        refuse["previous_version"] == v1 and refuse["run_id"] == run2.run_id and refuse["actor"] == "pytest"
    )
    assert refuse["metrics"]["average_precision"] < refuse["champion_metrics"]["average_precision"]
    assert [e["seq"] for e in entries] == list(range(1, 7))

    # what the run recorded
    client = registry.client(settings)
    run = client.get_run(run1.run_id)
    assert run.data.params["scale_pos_weight_strategy"] == "auto"
    y = train_df["tx_fraud"]
    assert float(run.data.params["scale_pos_weight_value"]) == pytest.approx(
        (y == 0).sum() / y.sum(), rel=1e-3
    )
    assert (
        run.data.params["train_start"] == "2018-04-08" and run.data.params["feature_service"] == "test-local"
    )
    assert run.data.metrics["train_rows"] == len(train_df)
    assert run.data.tags["data_sha256"] == T.data_fingerprint(train_df, FEATURES)
    assert run.data.metrics["holdout_average_precision"] == pytest.approx(
        first.challenger.metrics["average_precision"]
    )
    artifacts = {a.path for a in client.list_artifacts(run1.run_id, "plots")}
    assert {
        "plots/roc_curve.png",
        "plots/precision_recall_curve.png",
        "plots/feature_importance.png",
        "plots/score_distribution.png",
    } <= artifacts
    gate_json = mlflow.artifacts.load_dict(f"runs:/{run2.run_id}/evaluation/gate.json")
    assert gate_json["promote"] is False

    # what serving gets: the model, its version and its threshold, through the alias
    model, version, threshold = registry.load_model("champion", settings)
    assert version == v1
    assert threshold == pytest.approx(first.challenger.metrics["decision_threshold"])
    np.testing.assert_allclose(
        registry.predict_scores(model, holdout), run1.model.predict_proba(holdout[FEATURES])[:, 1], atol=1e-6
    )
    with pytest.raises(registry.ModelNotFoundError):
        registry.load_model("no-such-alias", settings)
    # the tag is the use case's: one without a decision policy gets scores only (no threshold required)
    assert registry.decision_tag(settings) == "decision_threshold"
    monkeypatch.setattr(registry, "decision_tag", lambda settings=None: None)
    assert registry.load_model("champion", settings)[1:] == (v1, None)
    monkeypatch.undo()


def test_rollback_restores_the_previous_champion(frames, home_settings, monkeypatch, capsys):
    settings = home_settings.with_case(model_name="fraud-rollback-test")
    train_df, holdout = frames
    run1, v1 = _train_register(settings, train_df, "first")
    out1 = T.evaluate_and_gate(v1, run1.run_id, holdout, settings=settings)
    T.promote_outcome(out1.as_dict(), reason="first", actor="alice", settings=settings)
    with pytest.raises(ValueError, match="no previous champion"):
        registry.rollback(reason="nothing to roll back to", actor="bob", settings=settings)

    run2, v2 = _train_register(
        settings, train_df.iloc[: len(train_df) // 2], "second", SMALL.replace(max_depth=4)
    )
    T.evaluate_and_gate(v2, run2.run_id, holdout, settings=settings)
    registry.promote(v2, reason="manual override for the test", actor="alice", settings=settings)
    assert registry.champion_version(settings) == v2
    assert (
        registry.alias_version("challenger", settings) is None
    )  # the promoted challenger's alias is cleared

    entry = registry.rollback(reason="v2 misbehaves online", actor="bob", settings=settings)
    assert registry.champion_version(settings) == v1
    assert (entry["action"], entry["version"], entry["previous_version"]) == ("rollback", v1, v2)
    _, version, _ = registry.load_model("champion", settings)
    assert version == v1

    changes = [e for e in registry.history(settings) if e["alias"] == "champion"]
    assert [(e["action"], e["version"], e["previous_version"], e["actor"]) for e in changes] == [
        ("promote", v1, None, "alice"),
        ("promote", v2, v1, "alice"),
        ("rollback", v1, v2, "bob"),
    ]
    assert changes[0]["run_id"] == run1.run_id and changes[1]["run_id"] == run2.run_id
    assert changes[0]["metrics"]["average_precision"] > 0
    # only one recorded champion is left below the current one: a second rollback has nowhere to go
    with pytest.raises(ValueError, match="no previous champion"):
        registry.rollback(reason="again", settings=settings)
    client = registry.client(settings)
    assert client.get_model_version(settings.case.model_name, v2).tags["gate"] == "rolled_back"

    # the CLI shows the same trail (settings from the environment, as in production)
    from jobs.platform.config import get_settings

    monkeypatch.setenv("MLP_HOME", str(settings.home))
    monkeypatch.setenv("FRAUD_MODEL_NAME", settings.case.model_name)
    get_settings.cache_clear()
    try:
        assert registry.main(["history"]) == 0
        out = capsys.readouterr().out.splitlines()
        assert registry.main(["show"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert registry.main(["rollback", "--reason", "again"]) == 2
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    rows = [line.split() for line in out[1:]]
    assert [(r[2], r[4]) for r in rows if r[3] == "champion"] == [
        ("promote", v1),
        ("promote", v2),
        ("rollback", v1),
    ]
    assert "v2 misbehaves online" in out[-1]
    assert shown["champion"]["version"] == v1 and float(shown["champion"]["decision_threshold"]) > 0
