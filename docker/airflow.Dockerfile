# Airflow (api-server, scheduler, dag-processor, triggerer, Celery worker) with the project installed.
# Build from the repository root:  docker build -f docker/airflow.Dockerfile -t fraud-platform/airflow:0.1.0 .
FROM apache/airflow:3.3.2-python3.11

USER root
# Spark jobs run their driver inside the Celery worker (client mode against spark://spark-master:7077)
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
ENV JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64

USER airflow
WORKDIR /opt/fraud
# the exact pins of the laptop profile; the image's own apache-airflow==3.3.2 is kept
COPY --chown=airflow:root requirements.lock /opt/fraud/requirements.lock
RUN pip install --no-cache-dir -r /opt/fraud/requirements.lock "apache-airflow==3.3.2"

COPY --chown=airflow:root pyproject.toml README.md /opt/fraud/
COPY --chown=airflow:root jobs /opt/fraud/jobs
COPY --chown=airflow:root serving /opt/fraud/serving
COPY --chown=airflow:root dags /opt/fraud/dags
COPY --chown=airflow:root feature_repo /opt/fraud/feature_repo
COPY --chown=airflow:root expectations /opt/fraud/expectations
COPY --chown=airflow:root docker/entrypoint.sh /opt/fraud/docker/entrypoint.sh
ENV PYTHONPATH=/opt/fraud \
    MLP_PROFILE=production \
    MLP_HOME=/opt/fraud/home \
    PYSPARK_PYTHON=python

# settings-derived env first, then the image's own entrypoint (dumb-init is PID 1 there)
ENTRYPOINT ["/usr/bin/dumb-init", "--", "/opt/fraud/docker/entrypoint.sh", "/entrypoint"]
CMD ["airflow", "version"]
