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

create_app()
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
