#!/usr/bin/env bash
# Prove that `pip install .` -- what the Dockerfile installs: the runtime dependencies only, no
# test or demo extras, so no full MLflow -- is enough to import every service module, build the
# app and run `insights-server --help`. Uses a fresh virtualenv in a temporary folder; needs PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PYTHON" -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install --quiet --disable-pip-version-check .
cd "$tmp"  # import the installed package, not the work tree
"$tmp/venv/bin/python" - <<'PY'
import importlib
import importlib.metadata as md
import pkgutil

import service

for module in pkgutil.walk_packages(service.__path__, "service."):
    if not module.name.startswith("service.demo"):  # the demo needs the [demo] extra
        importlib.import_module(module.name)
from service.app import create_app

app = create_app()
# The Insights page ships as package data and is served without a database.
from fastapi.testclient import TestClient

page = TestClient(app).get("/insights/")
assert page.status_code == 200 and "Trace Insights" in page.text, page.status_code
for asset in ("app.js", "api.js", "chart.js", "format.js", "style.css"):
    assert TestClient(app).get(f"/insights/{asset}").status_code == 200, asset
try:
    md.distribution("mlflow")
except md.PackageNotFoundError:
    pass
else:
    raise SystemExit("full mlflow was installed: a runtime dependency pulls it in")
print(f"runtime install OK: mlflow-skinny {md.version('mlflow-skinny')}, no full mlflow")
PY
"$tmp/venv/bin/insights-server" --help >/dev/null
echo "insights-server --help OK"
