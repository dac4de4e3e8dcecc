"""Settings: the platform's part (``MLP_*``) and the use case's section (its own prefix, ``FRAUD_*``)."""

from __future__ import annotations

import datetime as dt
import warnings

import pytest

from jobs.platform.config import LEGACY_ENV_PREFIX, Settings, UseCaseSettings
from jobs.platform.storage import StorageLayout


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No MLP_/FRAUD_ variable of the test session leaks into the settings under test."""
    import os

    for key in list(os.environ):
        if key.startswith(("MLP_", LEGACY_ENV_PREFIX)):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no .env file
    return monkeypatch


def test_platform_and_use_case_read_their_own_prefixes(clean_env, tmp_path):
    clean_env.setenv("MLP_HOME", str(tmp_path / "home"))
    clean_env.setenv("MLP_SPARK_MASTER", "local[1]")
    clean_env.setenv("FRAUD_MODEL_NAME", "fraud-x")
    clean_env.setenv("FRAUD_LABEL_DELAY_DAYS", "3")
    clean_env.setenv("FRAUD_RETRAIN_DRIFT_SHARE", "0.4")  # a section of the core's base class
    clean_env.setenv("FRAUD_AB_MDE", "0.05")
    clean_env.setenv("FRAUD_COST_FALSE_POSITIVE", "7")  # a section of fraud's own
    s = Settings()
    assert s.home == tmp_path / "home" and s.spark_master == "local[1]"
    assert isinstance(s.case, UseCaseSettings) and type(s.case).__name__ == "FraudSettings"
    assert s.case.model_name == "fraud-x" and s.case.label_delay_days == 3
    assert s.case.retrain.drift_share == 0.4 and s.case.ab.mde == 0.05
    assert s.case.costs.false_positive == 7
    # a use-case knob is not a platform one, and the other way round
    assert "model_name" not in Settings.model_fields and "home" not in UseCaseSettings.model_fields
    assert s.public_dict()["case"]["model_name"] == "fraud-x"


def test_legacy_platform_names_still_work_with_a_warning(clean_env, tmp_path):
    clean_env.setenv("FRAUD_HOME", str(tmp_path / "old"))
    with pytest.warns(DeprecationWarning, match="FRAUD_HOME: platform settings are now read as MLP_"):
        assert Settings().home == tmp_path / "old"
    clean_env.setenv("MLP_HOME", str(tmp_path / "new"))  # the new name wins
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert Settings().home == tmp_path / "new"


def test_threshold_names_from_before_use_cases_still_work(clean_env, tmp_path):
    from jobs.platform.params import ABConfig, Thresholds

    clean_env.setenv("FRAUD_RETRAIN_MAX_AP_DROP", "0.5")
    clean_env.setenv("FRAUD_RETRAIN_MIN_FRAUDS", "7")
    clean_env.setenv("FRAUD_AB_MIN_FRAUDS", "9")
    clean_env.setenv("FRAUD_RETRAIN_MIN_QUALITY", "0.2")  # the new name
    s = Settings(home=tmp_path)
    th = Thresholds.from_settings(s)
    assert (th.max_quality_drop, th.min_positives, th.min_quality) == (0.5, 7, 0.2)
    assert ABConfig.from_settings(s).min_positives == 9
    # a DAG run's conf written with the old keys
    assert Thresholds.from_mapping({"min_frauds": 3, "max_ap_drop": 0.1}).min_positives == 3


def test_section_overrides_and_child_process_env(clean_env, tmp_path):
    s = Settings(home=tmp_path, case={"feast_project": "p1", "schedule_end_date": "2018-04-10"})
    assert s.case.feast_project == "p1" and s.case.schedule_end_date == dt.date(2018, 4, 10)
    assert s.with_case(model_name="m2").case.model_name == "m2" and s.case.model_name == "fraud-detector"
    env = s.service_env()
    assert env["MLP_HOME"] == str(tmp_path) and env["MLP_USE_CASE"] == "fraud"
    assert env["FRAUD_FEAST_PROJECT"] == "p1" and env["FRAUD_SCHEDULE_END_DATE"] == "2018-04-10"
    assert not any(k.startswith("FRAUD_") and k[6:].lower() in Settings.model_fields for k in env)
    assert s.with_use_case("fraud") is s


def test_unknown_use_case_names_the_registered_ones(clean_env, tmp_path):
    with pytest.raises(ValueError, match=r"use_case: value 'nope' is not a registered use case.*fraud"):
        Settings(home=tmp_path, use_case="nope")


def test_storage_is_namespaced_by_use_case(clean_env, tmp_path):
    layout = StorageLayout(Settings(home=tmp_path, s3_prefix="p"))
    assert layout.key("landing_labels", "2018-04-08") == "fraud/landing/labels/date=2018-04-08"
    assert layout.key("quarantine_transactions") == "fraud/quarantine/transactions"
    assert layout.path("features", None, "customer") == tmp_path / "data/fraud/features/customer"
    assert layout.s3_uri("reports", "2018-04-01", "monitoring") == (
        "s3://fraud-platform/p/fraud/reports/monitoring/date=2018-04-01"
    )
    with pytest.raises(
        KeyError, match=r"dataset: value 'landing_users' is not a dataset of use case 'fraud'"
    ):
        layout.key("landing_users")
