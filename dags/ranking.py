"""The ranking use case's Airflow DAGs: ranking_ingest, ranking_build_features, ranking_train_model,
ranking_batch_predict and ranking_monitor_and_retrain, all from the platform's DAG factory
(``dags/_factory.py``); what is ranking's comes from its declaration (``jobs/ranking/use_case.py``)."""

from __future__ import annotations

from _factory import use_case_dags

globals().update(use_case_dags("ranking"))
