"""The Insights page (``/insights/``): plain HTML, CSS and ES modules, served as static files.

Nothing is built and nothing is fetched from elsewhere: ``pip install .`` ships these files
(pyproject's package-data) and the page calls the service's own API on the same origin, so it
works offline, standalone and behind nginx beside the MLflow UI.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

UI_DIR = Path(__file__).parent
PAGE_PATH = "/insights"


def install_ui(app: FastAPI) -> None:
    """Serve the page at ``/insights/`` (``/insights`` redirects there)."""

    @app.get(PAGE_PATH, include_in_schema=False)
    async def page_without_slash() -> RedirectResponse:
        return RedirectResponse(f"{PAGE_PATH}/")

    app.mount(PAGE_PATH, StaticFiles(directory=UI_DIR, html=True), name="insights-page")
