# The MLflow tracking server of docker-compose.yml, at the MLflow version Trace Insights is built
# for (pyproject.toml pins mlflow-skinny==3.17.2), with the PostgreSQL driver.
#   docker build -f deploy/mlflow.Dockerfile -t mlflow-server:3.17.2 .
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}
ARG MLFLOW_VERSION=3.17.2
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    MLFLOW_DISABLE_TELEMETRY=true
RUN pip install "mlflow==${MLFLOW_VERSION}" psycopg2-binary \
    && useradd --create-home --uid 10001 --user-group mlflow \
    && mkdir /mlartifacts && chown mlflow:mlflow /mlartifacts
USER mlflow
WORKDIR /home/mlflow
EXPOSE 5000
# /health answers once the server runs, and `mlflow server` migrates the schema before it starts
# listening: healthy means the tracking DB has MLflow's current schema.
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=6 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/health', timeout=4)"]
ENTRYPOINT ["mlflow", "server"]
CMD ["--host", "0.0.0.0", "--port", "5000"]
