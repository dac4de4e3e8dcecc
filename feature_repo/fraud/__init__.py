"""Feast feature repository of the fraud use case (one file per concern).

* ``entities.py``          the join keys: ``customer``, ``terminal`` and ``transaction``
* ``data_sources.py``      parquet sources over the offline feature tables written by ``jobs.fraud.features``
* ``feature_views.py``     ``customer_spending`` and ``terminal_risk`` (daily snapshots, TTL one day),
                           ``customer_activity_1h`` and ``customer_windows_at_tx`` (per
                           transaction, offline only)
* ``feature_services.py``  ``fraud_v1``, ``fraud_v2`` (+ the last hour) and ``fraud_v3`` (+ the
                           windows ending at the transaction): the versioned sets that training and
                           serving both read
* ``streaming.py``         the push source and view ``customer_recent_activity`` that keep the
                           last-hour features fresh online (registered by the scoring service)

Its own Feast project (``fraud``, ``FRAUD_FEAST_PROJECT``). The definitions read no settings and
build no platform paths: the platform drives this repo from ``jobs.platform.feature_store``
(configuration from the settings, file sources pointed at the storage layout); the
``feature_store*.yaml`` files are the equivalent configurations for the ``feast`` CLI, e.g.
``cd feature_repo/fraud && feast apply`` or ``feast -f feature_store.production.yaml apply``.
The modules import each other relatively when loaded as the ``feature_repo.fraud`` package and by
plain module name when the ``feast`` CLI loads them from this folder.
"""
