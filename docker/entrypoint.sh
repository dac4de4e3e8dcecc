#!/usr/bin/env bash
# Derive every third-party setting (Airflow metadata DB, MLflow URI, Airflow home and DAG folder...) from the
# ONE settings object (MLP_* / FRAUD_* variables + secrets.env), then run the command. A variable the container
# already has wins, so compose can override e.g. the executor without a second source of truth.
set -euo pipefail
while IFS= read -r line; do
  assignment="${line#export }"
  key="${assignment%%=*}"
  if [[ -z "${!key+x}" ]]; then
    eval "export ${assignment}"
  fi
done < <(python -m jobs.platform.config env)
mkdir -p "${MLP_HOME}" "${AIRFLOW_HOME:-${MLP_HOME}/airflow}"
exec "$@"
