"""Fraud's online A/B analysis (jobs.fraud.ab on the core engine): a clearly better challenger is
promoted, an equal one is kept, thin data extends, an alert flood breaks a guardrail."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pandas as pd
import pytest

from jobs.fraud.ab import AB_SPEC
from jobs.platform.ab_analysis import ABConfig, Clusters, _copy_ids, run_analysis
from jobs.platform.ab_analysis import analyse as analyse_log

FAST = ABConfig(n_boot=200, n_boot_costly=40, seed=1)


def analyse(log, cfg):
    return analyse_log(log, AB_SPEC, cfg)


def canary_log(
    n_customers=3000,
    share=0.3,
    sep_champion=1.0,
    sep_challenger=1.0,
    fraud_rate=0.03,
    seed=0,
    days=7,
    challenger_alert_boost=0.0,
    first_day="2018-05-10",
    salt=None,
) -> pd.DataFrame:
    """Customers split into arms (at random, or as serving routes them: by the experiment's ``salt``);
    each arm's score separates frauds from genuine by ``sep`` std units."""
    from jobs.platform.assignment import canary_bucket

    rng = np.random.default_rng(seed)
    n_tx = rng.poisson(4, n_customers) + 1
    cust = np.repeat(np.arange(n_customers), n_tx)
    n = len(cust)
    draw = rng.random(n_customers)
    if salt is not None:
        draw = np.array([canary_bucket(c, salt) for c in range(n_customers)])
    arm_of_customer = np.where(draw < share, "challenger", "champion")
    arm = arm_of_customer[cust]
    # fraud clusters on compromised cards, like the simulator's scenario 3
    compromised = rng.random(n_customers) < fraud_rate
    y = (compromised[cust] & (rng.random(n) < 0.35)).astype(int)
    sep = np.where(arm == "challenger", sep_challenger, sep_champion)
    logit = -4 + sep * 2.5 * y + rng.normal(0, 1.5, n)
    score = 1 / (1 + np.exp(-logit))
    threshold = np.where(arm == "challenger", 0.3 - challenger_alert_boost, 0.3)
    return pd.DataFrame(
        {
            "transaction_id": np.arange(n, dtype=np.int64),
            "customer_id": cust.astype(np.int64),
            "tx_datetime": pd.Timestamp(first_day)
            + pd.to_timedelta(rng.integers(0, days * 86400, n), unit="s"),
            "score": score,
            "decision": (score >= threshold).astype(int),
            "model_version": np.where(arm == "challenger", "2", "1"),
            "arm": arm,
            "tx_fraud": y,
        }
    )


def test_cluster_resampling_keeps_whole_customers():
    frame = pd.DataFrame({"customer_id": [3, 1, 3, 2, 1, 3], "tx_fraud": 0, "score": 0.1, "decision": 0})
    cl = Clusters(frame, AB_SPEC)
    assert cl.units[cl.starts].tolist() == [1, 2, 3] and cl.sizes.tolist() == [2, 1, 3]
    idx = cl.rows(np.array([2, 0, 2]))
    assert cl.frame["customer_id"].to_numpy()[idx].tolist() == [3, 3, 3, 1, 1, 3, 3, 3]
    assert _copy_ids(cl, idx).tolist() == [1, 1, 1, 2, 2, 3, 3, 3]  # the two draws of card 3 are two cards


def test_clearly_better_challenger_is_promoted():
    r = analyse(canary_log(sep_challenger=1.6), FAST)
    assert r.design == "canary"
    assert r.recommendation == "promote", r.reasons
    assert r.difference["value"] > 0.05
    # no plan: one fixed-sample look at the one-sided alpha, the z of the bootstrap standard error
    assert r.look["final"] and r.look["boundary"] == pytest.approx(1.959964, abs=1e-5)
    assert r.difference["z"] == pytest.approx(r.difference["value"] / r.difference["se"])
    assert r.difference["z"] > r.look["boundary"] and r.look["lower_at_boundary"] > 0
    assert (
        r.guardrails["auc_roc"]["status"] == "passed" and r.guardrails["decision_rate"]["status"] == "passed"
    )
    lo, hi = r.difference["ci"]
    assert 0 < lo < r.difference["value"] < hi
    ch = r.arms["challenger"]
    assert ch["ci"]["average_precision"][0] < ch["average_precision"] < ch["ci"]["average_precision"][1]
    assert r.arms["challenger"]["cp_k"] == 30 and r.arms["champion"]["cp_k"] == 70  # k scaled by arm size
    assert r.challenger_version == "2" and r.champion_version == "1"


def test_equal_arms_are_not_promoted():
    r = analyse(canary_log(sep_challenger=1.0, n_customers=6000, seed=3), FAST)
    # the final (only) look did not cross: kept, not extended until something turns significant
    assert r.recommendation == "keep", r.reasons
    assert (
        abs(r.difference["z"]) < r.look["boundary"]
        and "not crossed: no gain of the planned size" in r.reasons[0]
    )
    lo, hi = r.difference["ci"]
    assert lo < 0 < hi


def test_too_few_frauds_extends():
    r = analyse(canary_log(n_customers=300, sep_challenger=1.6, seed=2), FAST)
    assert r.recommendation == "extend"
    assert "min_positives" in r.reasons[0]


def test_better_ranking_that_floods_alerts_breaks_a_guardrail():
    r = analyse(canary_log(sep_challenger=1.6, challenger_alert_boost=0.25), FAST)
    g = r.guardrails["decision_rate"]
    assert g["status"] == "breached" and g["ci"][0] > 1.5  # the whole interval of the ratio above the limit
    assert r.recommendation == "keep" and "breached: decision_rate" in r.reasons[0]


def test_shadow_mode_is_paired():
    base = canary_log(share=0.0, seed=4)
    better = base.copy()
    # the champion's scores with a little more separation: the two share their noise (the same hard
    # cases), which only a paired analysis cancels
    logit = np.log(base["score"] / (1 - base["score"])) + 0.6 * base["tx_fraud"]
    better["score"] = 1 / (1 + np.exp(-logit))
    better["decision"] = (better["score"] >= 0.3).astype(int)
    better["arm"], better["model_version"] = "shadow", "2"
    r = analyse(pd.concat([base, better], ignore_index=True), FAST)
    assert r.design == "shadow"
    assert r.arms["champion"]["rows"] == r.arms["shadow"]["rows"] == len(base)
    assert r.recommendation == "promote", r.reasons
    assert r.difference["test"].startswith("paired customer_id bootstrap")
    # pairing: the same rows in both arms, so the shared variance cancels; the paired standard error
    # is below the one of the same arms read as independent samples
    independent = np.hypot(
        *(np.diff(r.arms[a]["ci"]["average_precision"])[0] / (2 * 1.959964) for a in ("champion", "shadow"))
    )
    assert r.difference["se"] < 0.5 * independent


def test_missing_arm_is_an_error():
    log = canary_log(share=0.0)
    with pytest.raises(ValueError, match="arm"):
        analyse(log, FAST)


@pytest.fixture
def two_versions(settings):
    """Two real registered versions (tiny XGBoost models) through the registry; v1 is champion."""
    import mlflow
    import xgboost as xgb

    from jobs.platform import registry

    registry.configure_mlflow(settings)
    rng = np.random.default_rng(0)
    x = pd.DataFrame({"f0": rng.normal(size=400), "f1": rng.normal(size=400)})
    y = (x["f0"] > 1).astype(int)
    versions = []
    for i in range(2):
        model = xgb.XGBClassifier(n_estimators=5 + i, max_depth=2).fit(x, y)
        with mlflow.start_run() as run:
            info = mlflow.xgboost.log_model(model, name="model", input_example=x.head(3))
        v = registry.register_challenger(run.info.run_id, info.model_uri, reason=f"test model {i}")
        registry.set_version_tags(v, {"decision_threshold": 0.5})
        versions.append(v)
    registry.promote(versions[0], reason="initial champion", actor="test")
    return versions


def _land(layout, log: pd.DataFrame, labels_through: dt.date) -> None:
    """Write a labelled log as serving's prediction log and the chargeback reports (2 days after the
    transaction), with a label partition for every day through ``labels_through``."""
    for day, part in log.groupby(log["tx_datetime"].dt.date):
        out = layout.path("prediction_log", day)
        out.mkdir(parents=True, exist_ok=True)
        part.drop(columns="tx_fraud").to_parquet(out / "part-0.parquet", index=False)
    frauds = log[log["tx_fraud"] == 1]
    reports = {
        day + dt.timedelta(days=2): part for day, part in frauds.groupby(frauds["tx_datetime"].dt.date)
    }
    day = log["tx_datetime"].min().date()
    while day <= labels_through:
        part = reports.get(day, frauds.iloc[:0])
        lab = layout.path("labels", day)
        lab.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(
            {
                "transaction_id": part["transaction_id"].astype("int64"),
                "tx_datetime": part["tx_datetime"].astype("M8[ns]"),
                "reported_at": pd.Series(pd.Timestamp(day) + pd.Timedelta(hours=9), index=part.index).astype(
                    "M8[ns]"
                ),
                "tx_fraud": np.int32(1),
            }
        ).to_parquet(lab / "part-0.parquet", index=False)
        day += dt.timedelta(days=1)


def test_a_planned_experiment_is_looked_at_and_applied_through_the_audited_registry(
    settings, layout, two_versions
):
    from jobs.platform import registry
    from jobs.platform.ab_analysis import plan_experiment
    from jobs.platform.ab_plan import find_plan

    champion_v, challenger_v = two_versions
    start = dt.date(2018, 5, 10)
    end = start + dt.timedelta(days=6)
    delay = settings.case.label_delay_days
    # the champion's traffic before the experiment: the pilot that sizes it
    pilot = canary_log(share=0.0, seed=11, days=21, first_day="2018-04-19", n_customers=6000)
    pilot["model_version"] = champion_v
    _land(layout, pilot, labels_through=start - dt.timedelta(days=1))
    from jobs.platform.assignment import experiment_salt

    salt = experiment_salt(settings.case.model_name, challenger_v)  # serving's split of this challenger
    log = canary_log(sep_challenger=1.6, first_day=start.isoformat(), salt=salt)
    log["model_version"] = np.where(log["arm"] == "challenger", challenger_v, champion_v)
    _land(layout, log, labels_through=end + dt.timedelta(days=2))
    cfg = dataclasses.replace(FAST, mde=0.25, max_days=7, look_every_days=7, canary_share=0.3)

    # immature labels are refused, not analysed: the default as_of (end + delay) has no labels yet
    with pytest.raises(
        ValueError, match=r"as_of: value 2018-05-23 is after the last ingested label day \(2018-05-18\)"
    ):
        run_analysis(start, end, cfg=cfg, settings=settings)
    with pytest.raises(ValueError, match=r"as_of: value 2018-05-18 is 2 day\(s\) after the period's end"):
        run_analysis(start, end, as_of=end + dt.timedelta(days=2), cfg=cfg, settings=settings)
    _land(layout, log, labels_through=end + dt.timedelta(days=delay))
    # no look before a plan is registered
    with pytest.raises(
        ValueError, match=rf"plan: challenger version '{challenger_v}' has no pre-registered A/B plan"
    ):
        run_analysis(start, end, cfg=cfg, settings=settings)

    plan = plan_experiment(start, cfg, challenger_version=challenger_v, actor="alice", settings=settings)
    # the pilot: the 14 days whose labels matured by the day before the start
    assert (plan.pilot["start"], plan.pilot["end"]) == ("2018-04-19", "2018-05-02")
    pilot_window = pilot[pilot["tx_datetime"] < "2018-05-03"]
    assert plan.pilot["positives"] == int(pilot_window["tx_fraud"].sum())
    assert plan.pilot["positives_per_day"] == pytest.approx(pilot_window["tx_fraud"].sum() / 14)
    assert (
        plan.design == "canary"
        and plan.share == 0.3
        and plan.feasible
        and plan.max_days == plan.planned_days <= 7
        and plan.metric == "average_precision"
    )
    assert plan.champion_version == champion_v and plan.created_by == "alice" and plan.salt == salt
    with pytest.raises(ValueError, match="already has a registered A/B plan"):
        plan_experiment(start, cfg, challenger_version=challenger_v, settings=settings)
    with pytest.raises(ValueError, match="start: value 2018-05-11 is not the experiment's start 2018-05-10"):
        run_analysis(start + dt.timedelta(days=1), end, cfg=cfg, settings=settings)

    result = run_analysis(start, end, cfg=cfg, apply=True, actor="alice", settings=settings)
    assert result.recommendation == "promote", result.reasons
    assert (
        result.look["final"]
        and result.look["look"] == 1
        and result.plan["challenger_version"] == challenger_v
    )
    exposure = {c["check"]: c for c in result.checks}["exposure"]
    first = log.loc[log["arm"] == "challenger", "tx_datetime"].min()
    assert exposure["passed"] and exposure["rows_before_exposure"] == int((log["tx_datetime"] < first).sum())
    assert exposure["assigned_rows_served_by_champion"] == 0 == exposure["challenger_rows_of_champion_units"]
    log = log[log["tx_datetime"] >= first]  # the experiment's rows
    assert result.look["information"] == pytest.approx((log["tx_fraud"].sum()) / plan.planned_positives)
    assert result.arms["challenger"]["frauds"] == int(log.loc[log.arm == "challenger", "tx_fraud"].sum())
    _, run_id, looks = find_plan(challenger_v, settings)
    assert [(x.look, x.end, x.recommendation) for x in looks] == [(1, end.isoformat(), "promote")]
    assert registry.client(settings).get_run(run_id).data.tags["ab.status"] == "concluded"
    assert registry.champion_version() == challenger_v
    last = registry.history()[-1]
    assert last["action"] == "promote" and last["version"] == challenger_v
    assert last["previous_version"] == champion_v and last["actor"] == "alice"
    assert last["reason"].startswith("online A/B")
    assert (layout.path("reports", end, "ab_analysis") / "result.json").exists()


def test_fast_metrics_match_sklearn():
    from sklearn.metrics import average_precision_score, roc_auc_score

    from jobs.platform.ab_analysis import auc_roc as _auc
    from jobs.platform.ab_analysis import average_precision as _ap

    rng = np.random.default_rng(5)
    y = (rng.random(2000) < 0.05).astype(int)
    s = np.round(rng.random(2000) * 0.5 + 0.4 * y, 2)  # rounded: many ties
    assert _ap(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert _auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_fast_card_precision_matches_the_metrics_module():
    from jobs.fraud.metrics import card_precision_arrays, card_precision_at_k

    log = canary_log(n_customers=800, fraud_rate=0.1, seed=7)
    log["score"] = np.round(log["score"], 2)  # ties between cards
    cl = Clusters(log, AB_SPEC)
    for k in (5, 20, 100):
        expected = card_precision_at_k(cl.frame, k)
        assert card_precision_arrays(
            cl.day, cl.frame["customer_id"].to_numpy(), cl.s, cl.y, k
        ) == pytest.approx(expected)


def test_a_sample_ratio_mismatch_blocks_even_a_clear_win():
    log = canary_log(sep_challenger=1.6, share=0.3)  # 3,000 customers, ~30 % on the challenger
    configured = dataclasses.replace(FAST, canary_share=0.3)
    ok = analyse(log, configured)
    srm = {c["check"]: c for c in ok.checks}["sample_ratio"]
    assert srm["passed"] and srm["p_value"] > 0.001 and ok.recommendation == "promote", ok.reasons
    # the same traffic read against a 10 % canary: ~900 challenger customers where ~300 were due
    r = analyse(log, dataclasses.replace(FAST, canary_share=0.1))
    assert r.recommendation == "blocked"
    assert r.reasons[0].startswith("sample ratio mismatch: challenger share 0.2967 of 3000 units")
    assert "configured 0.1000" in r.reasons[0] and "metrics alone said: " in r.reasons[-1]
    # hand check of the statistic: chi-square of the unit counts against the configured split
    from scipy.stats import chisquare

    srm = {c["check"]: c for c in r.checks}["sample_ratio"]
    n = srm["champion_units"] + srm["challenger_units"]
    expected = chisquare([srm["champion_units"], srm["challenger_units"]], [0.9 * n, 0.1 * n]).pvalue
    assert srm["p_value"] == pytest.approx(expected) and srm["p_value"] < 1e-10


def test_units_in_both_arms_block_the_verdict():
    log = canary_log(sep_challenger=1.6)
    champion_customers = log.loc[log["arm"] == "champion", "customer_id"].unique()
    # canary customers served by the champion while the challenger was loading: 2 % of the units
    leaked = log[log["customer_id"].isin(champion_customers[: int(0.02 * log["customer_id"].nunique())])]
    leaked = leaked.assign(
        arm="challenger", model_version="2", transaction_id=leaked["transaction_id"] + 10**9
    )
    r = analyse(pd.concat([log, leaked], ignore_index=True), FAST)
    contamination = {c["check"]: c for c in r.checks}["contamination"]
    assert (
        not contamination["passed"] and contamination["units_in_both_arms"] == leaked["customer_id"].nunique()
    )
    assert r.recommendation == "blocked" and r.reasons[0].startswith("contamination: ")
    # below the bound it is reported and does not block
    few = leaked[leaked["customer_id"].isin(leaked["customer_id"].unique()[:5])]
    kept = analyse(pd.concat([log, few], ignore_index=True), FAST)
    assert {c["check"]: c for c in kept.checks}["contamination"]["units_in_both_arms"] == 5
    assert kept.recommendation == "promote", kept.reasons


def _plan(salt: str, share: float):
    from jobs.platform.ab_plan import design_plan

    return design_plan(
        0.5, 100, 50.0, dataclasses.replace(FAST, mde=0.2, max_days=7, canary_share=share), design="canary",
        share=share, start=dt.date(2018, 5, 10), metric="average_precision", higher_is_better=True,
        challenger_version="2", champion_version="1",
    )  # fmt: skip


def test_the_experiment_is_read_from_the_challengers_first_row_and_by_its_assignment():
    salt = "fraud-detector/2"
    plan = dataclasses.replace(_plan(salt, 0.3), salt=salt)
    cfg = dataclasses.replace(FAST, canary_share=0.3)
    log = canary_log(sep_challenger=1.6, salt=salt)
    chal = log["arm"] == "challenger"
    # the challenger alias moved at noon on the first day: its canary customers were the champion's before
    noon = pd.Timestamp("2018-05-10 12:00")
    morning = chal & (log["tx_datetime"] < noon)
    before = log.assign(
        arm=np.where(morning, "champion", log["arm"]),
        model_version=np.where(morning, "1", log["model_version"]),
    )
    # ... and one replica served 40 canary rows with the champion after that (it had not loaded it yet)
    late = before.index[(before["arm"] == "challenger").to_numpy()][:40]
    before.loc[late, ["arm", "model_version"]] = ["champion", "1"]
    r = analyse_log(before, AB_SPEC, cfg, plan=plan)
    checks = {c["check"]: c for c in r.checks}
    exposure = checks["exposure"]
    started = before.loc[before["arm"] == "challenger", "tx_datetime"].min()
    assert exposure["exposure_start"] == started.isoformat() and started >= noon
    assert exposure["rows_before_exposure"] == int((before["tx_datetime"] < started).sum())
    assert exposure["assigned_rows_served_by_champion"] == 40 and exposure["passed"]
    assert exposure["share"] == pytest.approx(40 / int((chal & (log["tx_datetime"] >= started)).sum()))
    # without the step, the morning's canary customers are in both arms: the verdict would be blocked
    assert checks["contamination"]["units_in_both_arms"] == 0 and checks["contamination"]["passed"]
    unplanned = analyse_log(before, AB_SPEC, cfg)
    assert unplanned.recommendation == "blocked" and unplanned.reasons[0].startswith("contamination: ")
    assert r.recommendation == "promote", r.reasons
    after = before[before["tx_datetime"] >= started]
    expected_frauds = int(after.loc[after["arm"] == "champion"].drop(index=late)["tx_fraud"].sum())
    assert r.arms["champion"]["frauds"] == expected_frauds  # the 40 canary rows are nobody's control

    # a challenger that was mostly not served: the exposure check blocks
    mostly = before.copy()
    gone = mostly.index[(mostly["arm"] == "challenger").to_numpy()][40:][::2]
    mostly.loc[gone, ["arm", "model_version"]] = ["champion", "1"]
    blocked = analyse_log(mostly, AB_SPEC, cfg, plan=plan)
    assert blocked.recommendation == "blocked" and blocked.reasons[0].startswith("exposure: ")
    # a routing fault (a champion unit on the challenger) stays and is counted as contamination
    fault = before.copy()
    wrong = fault.index[(~chal & (fault["tx_datetime"] > pd.Timestamp("2018-05-12"))).to_numpy()][:3]
    fault.loc[wrong, ["arm", "model_version"]] = ["challenger", "2"]
    faulted = {c["check"]: c for c in analyse_log(fault, AB_SPEC, cfg, plan=plan).checks}
    assert faulted["exposure"]["challenger_rows_of_champion_units"] == 3
    assert faulted["contamination"]["units_in_both_arms"] == fault.loc[wrong, "customer_id"].nunique()


def test_the_weighted_bootstrap_metrics_equal_the_row_metrics_on_each_resample():
    from jobs.platform.ab_analysis import ArmSample, weighted_binary

    log = canary_log(n_customers=500, fraud_rate=0.1, seed=8)
    log["score"] = np.round(log["score"], 2)  # ties
    cl = Clusters(log, AB_SPEC)
    rng = np.random.default_rng(0)
    picks = [rng.integers(0, len(cl.starts), len(cl.starts)) for _ in range(5)]
    counts = np.stack([np.bincount(p, minlength=len(cl.starts)) for p in picks])
    for name, metric in (("average_precision", AB_SPEC.primary), ("auc_roc", AB_SPEC.guardrails[0].metric)):
        fast = weighted_binary(name)(cl.all())(counts)
        rows = [metric.stat(ArmSample(cl, cl.rows(p))) for p in picks]
        assert fast == pytest.approx(rows, abs=1e-12)
    # card precision@k with the arm's share of k; a card drawn twice is two cards
    cp = AB_SPEC.guardrails[1].metric
    fast = cp.weighted(cl.all(0.3))(counts)
    rows = [cp.stat(ArmSample(cl, cl.rows(p), 0.3)) for p in picks]
    assert fast == pytest.approx(rows, abs=1e-12) and cp.name == "card_precision_at_k"
