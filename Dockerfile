# MLflow Trace Insights: the service and its runtime dependencies only (no test or demo extras,
# so no full MLflow: mlflow-skinny provides the ORM table definitions the queries use).
#
#   docker build -t mlflow-trace-insights .
#   docker run -p 5001:5001 -e INSIGHTS_DATABASE_URL=postgresql://reader:pw@db:5432/mlflow \
#       mlflow-trace-insights
#
# docker-compose.yml runs it behind nginx beside an MLflow server (docs/deploy.md).
ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: install the package into a virtualenv, then copy only the virtualenv on.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY migrations_readonly ./migrations_readonly
# `.`, not `.[demo]` or `.[test]`: the runtime dependencies of pyproject.toml and nothing else.
RUN /opt/venv/bin/pip install . \
    && /opt/venv/bin/insights-server --help >/dev/null

# ---- runtime
FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    INSIGHTS_PORT=5001 \
    INSIGHTS_STORE_PATH=/var/lib/insights/store.duckdb
# The analytics store's file lives on a volume the service owns (disposable: rebuilt if lost).
RUN useradd --create-home --uid 10001 --user-group insights \
    && install -d -o insights -g insights /var/lib/insights
COPY --from=build /opt/venv /opt/venv
USER insights
WORKDIR /home/insights
EXPOSE 5001
# Liveness: GET /health answers 200 while the process runs (readiness is GET /ready).
# python:slim has no curl; urlopen raises, so the command fails, on anything but a 2xx.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('INSIGHTS_PORT', '5001'), timeout=4)"]
# Configuration comes from INSIGHTS_* variables (INSIGHTS_DATABASE_URL, ...), see docs/deploy.md;
# further flags may be appended: `docker run IMAGE --statement-timeout 10`.
ENTRYPOINT ["insights-server", "--host", "0.0.0.0"]
