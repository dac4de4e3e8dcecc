"""Feast feature repository of the ranking use case (one file per concern).

* ``entities.py``          the join keys: ``user``, ``item`` and ``category`` (user x category keys the affinity)
* ``data_sources.py``      parquet sources over the tables written by ``jobs.ranking.features``
* ``feature_views.py``     ``user_activity``, ``item_activity``, ``user_category_affinity`` (daily
                           snapshots, TTL one day) and ``item_catalogue`` (the catalogue's change log:
                           the item as it was at the request's time)
* ``feature_services.py``  ``ranker_v1``: what the learning-to-rank model is trained and served with

Its own Feast project (``ranking``, ``RANKING_FEAST_PROJECT``). Like fraud's, the definitions read
no settings and build no platform paths; the ``feature_store*.yaml`` files are the configurations
for the ``feast`` CLI (``cd feature_repo/ranking && feast apply``).
"""
