# Spark master / worker and spark-submit for the batch jobs (jobs.* CLIs), Java 17 + the same pyspark pin.
# Build from the repository root:  docker build -f docker/spark.Dockerfile -t fraud-platform/spark:0.1.0 .
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps tini \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
ENV JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64

WORKDIR /opt/fraud
COPY requirements.lock /opt/fraud/requirements.lock
# executors need the same Python libraries as the driver (pandas/pyarrow UDFs, the feature code)
RUN pip install --no-cache-dir -r /opt/fraud/requirements.lock

COPY pyproject.toml README.md /opt/fraud/
COPY jobs /opt/fraud/jobs
COPY docker/entrypoint.sh /opt/fraud/docker/entrypoint.sh
ENV PYTHONPATH=/opt/fraud \
    MLP_PROFILE=production \
    MLP_HOME=/opt/fraud/home \
    PYSPARK_PYTHON=python \
    SPARK_HOME=/usr/local/lib/python3.11/site-packages/pyspark \
    SPARK_NO_DAEMONIZE=1
ENV PATH="${SPARK_HOME}/bin:${SPARK_HOME}/sbin:${PATH}"

RUN useradd --create-home --uid 50000 spark && mkdir -p /opt/fraud/home && chown -R spark /opt/fraud/home
USER spark
ENTRYPOINT ["/usr/bin/tini", "--", "/opt/fraud/docker/entrypoint.sh"]
CMD ["spark-submit", "--version"]
