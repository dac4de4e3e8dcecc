"""Feature services: the versioned feature sets models are trained and served with.

A new model generation that needs different features gets a new service (``fraud_v2``); the old
one stays until no model in the registry uses it.
"""

from feast import FeatureService

try:
    from .feature_views import customer_activity_1h, customer_spending, terminal_risk
except ImportError:
    from feature_views import customer_activity_1h, customer_spending, terminal_risk

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
