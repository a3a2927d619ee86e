"""MLflow's own web UI in headless Chromium: open a page, record its trace-metrics calls.

The browser is Debian's Chromium (``deploy/install-e2e-deps.sh``) driven by Playwright's Python
client; Playwright's own browser downloads are never used. Every host name but 127.0.0.1 is
unresolvable, so the page works offline or fails visibly.

``open_page`` loads one URL of the UI and returns what a person would have seen (the visible
text, a screenshot) and what the page asked: every ``POST .../traces/metrics`` with its request
body, status, headers and JSON answer, and every other response that failed.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from playwright.sync_api import Browser, Page, Request, Response, sync_playwright
from playwright.sync_api import Error as PlaywrightError

TRACE_METRICS_PATH = re.compile(r"^/(?:api|ajax-api)/3\.0/mlflow/traces/metrics$")
# Pop-ups the UI opens over the charts on a first visit (the "Detect Issues" guidance, the
# assistant's side panel): closed before the screenshot, which should show the charts.
POPUP_CLOSE_BUTTONS = ("Close guidance", "Close")


@dataclass(frozen=True)
class MetricsCall:
    """One ``traces/metrics`` request the page made and the answer it got."""

    path: str
    request: dict[str, Any]
    status: int
    headers: dict[str, str]
    answer: Any  # the parsed JSON body


@dataclass
class PageVisit:
    text: str  # the page's visible text, whitespace collapsed to single spaces
    charts: int  # charts drawn (recharts, the UI's chart library: one wrapper per chart)
    metrics_calls: list[MetricsCall]
    failed_responses: list[tuple[str, int]]  # every other response with status >= 400
    page_errors: list[str]  # uncaught exceptions in the page
    console_errors: list[str]
    screenshot: Path


@dataclass
class _Recorder:
    """Collects the page's events while it loads (Playwright calls these from its loop)."""

    metrics_responses: list[Response] = field(default_factory=list)
    in_flight: set[Request] = field(default_factory=set)
    failed_responses: list[tuple[str, int]] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def attach(self, page: Page) -> None:
        page.on("request", self._request)
        page.on("requestfinished", self._request_finished)
        page.on("requestfailed", self._request_failed)
        page.on("response", self._response)
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        page.on(
            "console",
            lambda message: (
                self.console_errors.append(message.text) if message.type == "error" else None
            ),
        )

    def _request(self, request: Request) -> None:
        if TRACE_METRICS_PATH.match(urlsplit(request.url).path):
            self.in_flight.add(request)

    def _request_finished(self, request: Request) -> None:
        self.in_flight.discard(request)

    def _request_failed(self, request: Request) -> None:
        self.in_flight.discard(request)
        self.failed_responses.append((request.url, 0))

    def _response(self, response: Response) -> None:
        if TRACE_METRICS_PATH.match(urlsplit(response.url).path):
            self.metrics_responses.append(response)
        elif response.status >= 400:
            self.failed_responses.append((response.url, response.status))


@contextmanager
def chromium(executable: str) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable,
            args=[
                "--no-sandbox",  # CI runs as root
                "--no-proxy-server",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            ],
        )
        try:
            yield browser
        finally:
            browser.close()


def collapse(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def open_page(
    browser: Browser,
    url: str,
    *,
    expected_texts: list[str],
    screenshot: Path,
    timeout_s: float = 60,
    quiet_s: float = 1.5,
) -> PageVisit:
    """Load ``url`` in a fresh page and wait until every one of ``expected_texts`` is on it and
    no ``traces/metrics`` request has been in flight for ``quiet_s``. Returns what it showed
    even when the wait times out: the caller's assertions say what is missing."""
    # Tall: the UI scrolls inside its own panel, so a full-page screenshot is one viewport.
    page = browser.new_page(viewport={"width": 1400, "height": 2400})
    recorder = _Recorder()
    recorder.attach(page)
    try:
        page.goto(url, wait_until="load")
        deadline = time.monotonic() + timeout_s
        quiet_since: float | None = None
        while time.monotonic() < deadline:
            page.wait_for_timeout(250)  # lets Playwright deliver the page's events
            text = collapse(page.inner_text("body"))
            if recorder.in_flight or not all(t in text for t in expected_texts):
                quiet_since = None
            elif quiet_since is None:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= quiet_s:
                break
        close_popups(page)
        text = collapse(page.inner_text("body"))
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)
        calls = [metrics_call(response) for response in recorder.metrics_responses]
        return PageVisit(
            text=text,
            charts=page.locator(".recharts-wrapper > svg.recharts-surface").count(),
            metrics_calls=calls,
            failed_responses=recorder.failed_responses,
            page_errors=recorder.page_errors,
            console_errors=recorder.console_errors,
            screenshot=screenshot,
        )
    finally:
        page.close()


def close_popups(page: Page) -> None:
    for label in POPUP_CLOSE_BUTTONS:
        button = page.get_by_role("button", name=label, exact=True)
        with suppress(PlaywrightError):  # not there on this page: nothing to close
            if button.count():
                button.first.click(timeout=2000)
    page.wait_for_timeout(300)  # the panels' closing animations


def metrics_call(response: Response) -> MetricsCall:
    request = response.request
    try:
        answer: Any = response.json()
    except (PlaywrightError, json.JSONDecodeError):
        answer = response.text()
    return MetricsCall(
        path=urlsplit(response.url).path,
        request=json.loads(request.post_data or "null"),
        status=response.status,
        headers=response.headers,
        answer=answer,
    )
