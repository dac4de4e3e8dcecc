"""The fraud use case's Airflow DAGs: fraud_ingest, fraud_build_features, fraud_train_model,
fraud_batch_predict and fraud_monitor_and_retrain, all from the platform's DAG factory
(``dags/_factory.py``); what is fraud's comes from its declaration (``jobs/fraud/use_case.py``)."""

from __future__ import annotations

from _factory import use_case_dags

globals().update(use_case_dags("fraud"))
