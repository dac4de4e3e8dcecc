"""Feature services: the versioned feature sets models are trained and served with.

A new model generation that needs different features gets a new service (``fraud_v2``, ``fraud_v3``);
the old ones stay until no model in the registry uses them.
"""

from feast import FeatureService

try:
    from .feature_views import customer_activity_1h, customer_spending, customer_windows_at_tx, terminal_risk
except ImportError:
    from feature_views import customer_activity_1h, customer_spending, customer_windows_at_tx, terminal_risk

fraud_v1 = FeatureService(
    name="fraud_v1",
    features=[customer_spending, terminal_risk],
    tags={"use_case": "fraud", "version": "1"},
    description="Baseline fraud features: customer spending + delayed terminal risk (handbook 3.4).",
)

fraud_v2 = FeatureService(
    name="fraud_v2",
    features=[customer_spending, terminal_risk, customer_activity_1h],
    tags={"use_case": "fraud", "version": "2"},
    description="fraud_v1 + the customer's activity in the last hour (batch table offline, "
    "the push source's view online).",
)

fraud_v3 = FeatureService(
    name="fraud_v3",
    features=[customer_spending, terminal_risk, customer_activity_1h, customer_windows_at_tx],
    tags={"use_case": "fraud", "version": "3"},
    description="fraud_v2 + the customer's 1/7/30-day windows ending at the transaction (yesterday's "
    "snapshot + the day's activity: batch table offline, snapshot + pushed view online).",
)
