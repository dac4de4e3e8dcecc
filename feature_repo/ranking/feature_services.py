"""Feature services: the versioned feature sets the ranker is trained and served with."""

from feast import FeatureService

try:
    from .feature_views import item_activity, item_catalogue, user_activity, user_category_affinity
except ImportError:
    from feature_views import item_activity, item_catalogue, user_activity, user_category_affinity

ranker_v1 = FeatureService(
    name="ranker_v1",
    features=[user_activity, item_activity, user_category_affinity, item_catalogue],
    tags={"use_case": "ranking", "version": "1"},
    description="User and item activity, user x category affinity and the catalogue (price, launch).",
)
