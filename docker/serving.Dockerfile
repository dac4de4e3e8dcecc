# Slim scoring service (FastAPI + uvicorn): only what scoring needs, pinned by requirements.lock.
# Also runs the MLflow tracking server (same mlflow pin, psycopg2 and boto3 included).
# Build from the repository root:  docker build -f docker/serving.Dockerfile -t fraud-platform/serving:0.1.0 .
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends tini libgomp1 \
 && apt-get clean && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/fraud
COPY requirements.lock /opt/fraud/requirements.lock
# a subset of the lock, each at the lock's version (-c): no Airflow, no Spark, no GX/Evidently
RUN pip install --no-cache-dir -c /opt/fraud/requirements.lock \
      fastapi uvicorn prometheus-client httpx pydantic pydantic-settings \
      mlflow xgboost "feast[redis,postgres]" pandas numpy pyarrow scikit-learn boto3 psycopg2-binary redis

COPY pyproject.toml README.md /opt/fraud/
COPY jobs /opt/fraud/jobs
COPY serving /opt/fraud/serving
COPY feature_repo /opt/fraud/feature_repo
COPY docker/entrypoint.sh /opt/fraud/docker/entrypoint.sh
ENV PYTHONPATH=/opt/fraud \
    MLP_PROFILE=production \
    MLP_HOME=/opt/fraud/home \
    MLP_SERVING_HOST=0.0.0.0

RUN useradd --create-home --uid 50000 fraud && mkdir -p /opt/fraud/home && chown -R fraud /opt/fraud/home
USER fraud
EXPOSE 8000
ENTRYPOINT ["/usr/bin/tini", "--", "/opt/fraud/docker/entrypoint.sh"]
CMD ["python", "-m", "serving.app", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
