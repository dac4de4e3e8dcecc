"""Fraud's settings section (``FRAUD_*``): ``settings.case`` when the use case is ``fraud``.

The platform's own settings (profile, home, services) are ``MLP_*`` (:mod:`jobs.platform.config`);
everything that is fraud's lives here: the model and feature service, the simulated world's
schedule and label delay, the id ranges ingestion accepts, the business costs that choose the
decision threshold, the champion/challenger gate, and the monitoring and A/B thresholds
(``FRAUD_RETRAIN_*``, ``FRAUD_AB_*``, sections of the core's base class).
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from jobs.platform.config import UseCaseSettings


class Costs(BaseSettings):
    """Business cost of each error kind, used to choose the decision threshold (``FRAUD_COST_*``)."""

    model_config = SettingsConfigDict(env_prefix="FRAUD_COST_", env_file=".env", extra="ignore")

    false_positive: float = Field(
        5.0, ge=0, description="analyst review + customer friction of a false alarm"
    )
    false_negative: float = Field(100.0, ge=0, description="expected chargeback loss of a missed fraud")


class Gate(BaseSettings):
    """Champion/challenger gate: how much better a challenger must be, and what it may not break
    (``FRAUD_GATE_*``; turned into the core's GateSpec by ``jobs.fraud.use_case.gate_spec``)."""

    model_config = SettingsConfigDict(env_prefix="FRAUD_GATE_", env_file=".env", extra="ignore")

    margin: float = Field(
        0.0, ge=0, description="the lower bound of the challenger's AP gain must exceed this"
    )
    guardrail_tolerance: float = Field(
        0.02, ge=0, description="non-inferiority margin of AUC ROC / card precision@100"
    )
    slice_tolerance: float = Field(
        0.05, ge=0, description="a slice refuses when its AP drop beyond this is significant (Holm)"
    )
    alpha: float = Field(
        0.025, gt=0, lt=0.5, description="level of each one-sided gate test (paired bootstrap)"
    )
    resamples: int = Field(1000, ge=100, description="paired bootstrap resamples of the holdout")
    bootstrap_unit: str = Field(
        "customer_id", description="the holdout column resampled: cards, whose frauds cluster"
    )
    min_slice_frauds: int = Field(20, ge=1, description="slices with fewer frauds are not gated (noise)")
    min_auc_roc: float = Field(0.70, ge=0, le=1, description="absolute floor for any champion")
    min_average_precision: float = Field(0.10, ge=0, le=1, description="absolute floor for any champion")


class FraudSettings(UseCaseSettings):
    model_config = SettingsConfigDict(env_prefix="FRAUD_")

    model_name: str = "fraud-detector"
    feature_service: str = "fraud_v3"
    feast_project: str = Field(
        "fraud", description="Feast project (registry namespace, online-store key prefix)"
    )
    max_customer_id: int = Field(10_000_000, gt=0, description="ingest rejects customer ids outside [0, max)")
    max_terminal_id: int = Field(10_000_000, gt=0, description="ingest rejects terminal ids outside [0, max)")
    costs: Costs = Field(default_factory=Costs)
    gate: Gate = Field(default_factory=Gate)
