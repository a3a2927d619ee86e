"""The Insights page (``/insights/``) in headless Chromium, driven by Playwright, against the app
served by uvicorn on a free port over the SQLite test database.

For every section the numbers the page shows (each carries the API's value in ``data-value``)
must equal the API's answer to the request the page made (``body[data-request]``); changing the
window, time zone and filter must change them; a correlation row's link must carry a filter
that MLflow's own ``search_traces`` answers with exactly the row's traces. Screenshots go to
``$INSIGHTS_PAGE_SCREENSHOTS`` (default ``build/insights-page/``).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from playwright.sync_api import Browser, Page, sync_playwright

from service.app import create_app
from service.settings import Settings
from tests.conftest import API, Backend, build_backend

# Chromium's headless shell: the browser Playwright itself runs headless (install-e2e-deps.sh).
CHROMIUM = "/usr/bin/chromium-headless-shell"
SHOTS = Path(os.environ.get("INSIGHTS_PAGE_SCREENSHOTS", "build/insights-page"))
READY = "document.body.dataset.state === 'ready'"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def sqlite_backend(data_dir: Path) -> Backend:
    return build_backend("sqlite", data_dir)


@pytest.fixture(scope="module")
def base_url(sqlite_backend: Backend) -> Iterator[str]:
    app = create_app(Settings(database_url=sqlite_backend.service_url))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, timezone_id="UTC")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield page
    context.close()
    assert not errors, errors


def api(base_url: str, endpoint: str, body: dict[str, Any]) -> Any:
    response = httpx.post(f"{base_url}{API}/{endpoint}", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def open_page(page: Page, base_url: str, backend: Backend, **params: str) -> dict[str, Any]:
    """Open the page on the dataset's whole window (custom) and wait until every section is
    done; returns the series request the page made."""
    query = {
        "experiment": backend.experiment_id(),
        "window": "custom",
        "from": str(backend.dataset.start_time_ms),
        "to": str(backend.dataset.end_time_ms),
        "bucket": "day",
        **params,
    }
    page.goto(f"{base_url}/insights/?{httpx.QueryParams(query)}")
    return wait_ready(page)


def wait_ready(page: Page, after: dict[str, Any] | None = None) -> dict[str, Any]:
    """Wait until every section is done (with ``after``: done with a request other than it)."""
    if after is not None:
        page.wait_for_function(
            f"r => document.body.dataset.request !== r && {READY}",
            arg=json.dumps(after, separators=(",", ":")),
            timeout=30_000,
        )
    page.wait_for_function(READY, timeout=30_000)
    request: dict[str, Any] = json.loads(page.evaluate("document.body.dataset.request"))
    return request


def shown(page: Page, selector: str) -> dict[str, Any]:
    """``data-metric`` -> value of the metric elements directly under ``selector``."""
    found: dict[str, Any] = page.eval_on_selector_all(
        f"{selector} [data-metric]",
        "nodes => Object.fromEntries("
        "nodes.map(n => [n.dataset.metric, JSON.parse(n.dataset.value)]))",
    )
    return found


def buckets(page: Page, nth: int = 1) -> list[int]:
    text = page.get_attribute(f"#overview-charts figure:nth-child({nth})", "data-buckets")
    assert text is not None
    result: list[int] = json.loads(text)
    return result


def shot(page: Page, name: str, *, full_page: bool = True) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / name), full_page=full_page)


def assert_overview(page: Page, base_url: str, request: dict[str, Any]) -> None:
    body = {**request, "compare_previous": True}
    answers = {
        e: api(base_url, f"traffic-cost/{e}", body)
        for e in ("volume", "latency", "errors", "tokens", "cost")
    }
    metrics = shown(page, "#overview-cards")
    assert metrics, "the overview shows no numbers"
    for name, value in metrics.items():
        endpoint, key, *previous = name.split(".")
        summary = answers[endpoint]["previous_summary" if previous else "summary"]
        assert value == summary[key], name
    assert {"volume.count", "errors.error_rate", "latency.p99_latency", "cost.total_cost"} <= set(
        metrics
    )
    assert buckets(page) == [p["time_bucket"] for p in answers["volume"]["time_series"]]
    models = page.eval_on_selector_all(
        "#cost-table tbody tr", "rows => rows.map(r => r.dataset.model)"
    )
    assert models == [m["model_name"] or "" for m in answers["cost"]["by_model"]]


def test_every_section_shows_the_apis_numbers(
    page: Page, base_url: str, sqlite_backend: Backend
) -> None:
    request = open_page(page, base_url, sqlite_backend)
    shot(page, "page-1280.png")
    assert_overview(page, base_url, request)
    scope = {k: request[k] for k in ("experiment_ids", "start_time", "end_time")}

    # Quality: one card per feedback name, in discovery order, with its metrics.
    names = [a["assessment_name"] for a in api(base_url, "assessments/discovery", scope)["data"]]
    assert (
        page.eval_on_selector_all("[data-assessment]", "c => c.map(x => x.dataset.assessment)")
        == names
    )
    types = set()
    for name in names:
        m = api(base_url, "assessments/metrics", {**request, "assessment_name": name, "limit": 5})
        types.add(m["assessment_type"])
        for key, value in shown(page, f'[data-assessment="{name}"]').items():
            if key == "count":
                continue  # the counts of the top values, checked below
            assert value == m["summary"][key], (name, key)
        if m["assessment_type"] == "string":
            counts = page.eval_on_selector_all(
                f'[data-assessment="{name}"] .bar:not(.other) [data-metric="count"]',
                "n => n.map(x => JSON.parse(x.dataset.value))",
            )
            assert counts == [t["count"] for t in m["summary"]["top_values"]]
    assert types == {"boolean", "numeric", "string"}

    # Tools: a row per tool, in the table's default order (most calls first).
    tools = api(base_url, "tools/discovery", request)["data"]
    rows = page.eval_on_selector_all("#tools-table tbody tr", "r => r.map(x => x.dataset.tool)")
    assert rows == [t["tool_name"] for t in tools]
    for tool in tools:
        for key, value in shown(page, f'#tools-table tr[data-tool="{tool["tool_name"]}"]').items():
            assert value == tool[key], (tool["tool_name"], key)
    page.focus('#tools-table th button[data-sort="p99_latency"]')
    page.keyboard.press("Enter")  # sortable with the keyboard
    by_p99 = page.eval_on_selector_all("#tools-table tbody tr", "r => r.map(x => x.dataset.tool)")
    assert by_p99 == [
        t["tool_name"]
        for t in sorted(tools, key=lambda t: (-(t["p99_latency"] or -1), t["tool_name"]))
    ]
    assert "sort=p99_latency" in page.url

    # Tags: every key, and the first key's top values with "other".
    keys = api(base_url, "tags/discovery", scope)["data"]
    assert page.eval_on_selector_all("#tag-keys tbody tr", "r => r.map(x => x.dataset.tag)") == [
        k["tag_key"] for k in keys
    ]
    customer = next(k["tag_key"] for k in keys if k["unique_values"] > 10)
    page.click(f'#tag-keys tr[data-tag="{customer}"] button')
    page.wait_for_selector(f'#tag-values >> text="{customer}"')
    top = api(base_url, "tags/metrics", {**scope, "tag_key": customer, "limit": 10})["data"]
    values = shown(page, "#tag-values h3")
    assert values == {"trace_count": top["trace_count"], "unique_values": top["unique_values"]}
    assert page.eval_on_selector_all("#tag-values .bar", "b => b.map(x => x.dataset.value)") == [
        *(t["value"] for t in top["top_values"]),
        "(other)",
    ]
    assert shown(page, "#tag-values .bar.other") == {"other_count": top["other_count"]}
    assert f"tag={customer}" in page.url

    # What goes with this? The errors slice by default.
    result = api(
        base_url,
        "correlations",
        {**scope, "filter_string": "status = 'ERROR'", "limit": 10, "min_count": 5},
    )
    table_rows = page.eval_on_selector_all(
        "#correlation-table tbody tr", "r => r.map(x => [x.dataset.dimension, x.dataset.value])"
    )
    assert table_rows == [[r["dimension"], r["value"]] for r in result["data"]]
    first = result["data"][0]
    assert shown(page, "#correlation-table tbody tr:first-child") == {
        k: first[k]
        for k in (
            "trace_count",
            "percentage_of_slice",
            "percentage_of_total",
            "npmi_score",
            "npmi_smoothed",
        )
    }
    shot(page, "sections-1280.png")
    page.set_viewport_size({"width": 390, "height": 844})
    # Readable on a phone: wide tables scroll inside their box, the page itself does not.
    assert page.evaluate("document.documentElement.scrollWidth") == 390
    shot(page, "page-phone.png")


def test_window_timezone_and_filter_update_the_numbers(
    page: Page, base_url: str, sqlite_backend: Backend
) -> None:
    first = open_page(page, base_url, sqlite_backend)
    before = shown(page, "#overview-cards")

    # Time zone: day buckets start at Kolkata's midnight.
    page.fill("#timezone", "Asia/Kolkata")
    page.press("#timezone", "Enter")
    request = wait_ready(page, after=first)
    assert "timezone=Asia%2FKolkata" in page.url
    assert request["timezone"] == "Asia/Kolkata"
    assert_overview(page, base_url, request)
    assert buckets(page) != [
        p["time_bucket"] for p in api(base_url, "traffic-cost/volume", first)["time_series"]
    ]

    # Window: the last 7 days (up to now, where the dataset ends).
    page.select_option("#window", "7d")
    request = wait_ready(page, after=request)
    assert "window=" not in page.url  # 7 days is the default
    assert request["end_time"] - request["start_time"] == 7 * 86_400_000
    assert_overview(page, base_url, request)
    assert shown(page, "#overview-cards")["volume.count"] < before["volume.count"]

    # Filter: a slice of the traces; the page's numbers follow it.
    page.fill("#filter", "tags.persona = 'admin'")
    page.click("#scope button[type=submit]")
    request = wait_ready(page, after=request)
    assert "filter=tags.persona" in page.url
    assert request["filter_string"] == "tags.persona = 'admin'"
    assert_overview(page, base_url, request)
    tools = api(base_url, "tools/discovery", request)["data"]
    assert page.eval_on_selector_all(
        "#tools-table tbody tr", "r => r.map(x => x.dataset.tool)"
    ) == [t["tool_name"] for t in tools]
    shot(page, "filtered-7d-kolkata.png")

    # Reload: the URL alone brings the same view back. "The last 7 days" ends at the next
    # whole hour from now, so a reload moves it by an hour at most (when an hour began).
    page.reload()
    reloaded = wait_ready(page)
    window = ("start_time", "end_time")
    assert {k: v for k, v in reloaded.items() if k not in window} == {
        k: v for k, v in request.items() if k not in window
    }
    assert reloaded["end_time"] - reloaded["start_time"] == 7 * 86_400_000
    moved = reloaded["end_time"] - request["end_time"]
    assert moved in (0, 3_600_000) and reloaded["end_time"] % 3_600_000 == 0

    # A bad filter: the service's 400 message, inline under the filter box.
    page.fill("#filter", "bogus.key = 1")
    page.click("#scope button[type=submit]")
    wait_ready(page, after=request)
    response = httpx.post(
        f"{base_url}{API}/traffic-cost/volume", json={**request, "filter_string": "bogus.key = 1"}
    )
    assert response.status_code == 400
    message = page.text_content("#filter-error")
    assert message == response.json()["message"]
    assert page.get_attribute("#filter", "aria-invalid") == "true"
    shot(page, "bad-filter.png", full_page=False)


def test_an_experiment_the_tracking_db_does_not_hold_falls_back_to_the_first_listed(
    page: Page, base_url: str, sqlite_backend: Backend
) -> None:
    """The page asks for the URL's experiment at once, beside the list of experiments; when the
    list does not hold it, the page settles on the list's first experiment, and every number
    shown is that experiment's, not the first requests' answers (404s)."""
    listed = api(base_url, "experiments", {})["data"]
    assert listed, "the test database lists no experiments"
    request = open_page(page, base_url, sqlite_backend, experiment="987654321")
    assert request["experiment_ids"] == [listed[0]["experiment_id"]]
    assert f"experiment={listed[0]['experiment_id']}" in page.url
    assert_overview(page, base_url, request)
    assert page.eval_on_selector_all(".state[data-state=error]", "n => n.length") == 0


def test_a_correlation_link_opens_the_matching_traces(
    page: Page, base_url: str, sqlite_backend: Backend
) -> None:
    request = open_page(page, base_url, sqlite_backend)
    exp = sqlite_backend.experiment_id()
    store = SqlAlchemyStore(sqlite_backend.sync_uri, "/tmp/insights-artifacts")
    # Each row's link is the row's filter_string (correlations), ANDed with window and slice.
    links = page.eval_on_selector_all(
        "#correlation-table tbody tr",
        "r => r.map(x => [x.dataset.dimension, x.dataset.value, "
        "JSON.parse(x.querySelector('[data-metric=trace_count]').dataset.value), "
        "x.querySelector('a.traces-link')?.dataset.filterString, "
        "x.querySelector('a.traces-link')?.href])",
    )
    assert len(links) >= 3
    for dimension, value, trace_count, filter_string, href in links:
        assert filter_string, (dimension, value)
        assert href.endswith(f"#/experiments/{exp}/traces")
        infos, token = store.search_traces(
            experiment_ids=[exp], filter_string=filter_string, max_results=50_000
        )
        assert token is None
        assert len(infos) == trace_count, (dimension, value, filter_string)
        assert all(i.state.value == "ERROR" for i in infos)
        assert all(request["start_time"] <= i.request_time < request["end_time"] for i in infos)

    # The NPMI detail of the first pair: its 2x2 table and calculate-npmi's score.
    # The detail asks calculate-npmi for the pair only when it is opened.
    page.click("#correlation-table tbody tr:first-child .npmi-link")
    page.wait_for_selector("#npmi-detail [data-pair=done]", timeout=60_000)
    detail = shown(page, "#npmi-detail")
    row = api(
        base_url,
        "correlations",
        {
            **{k: request[k] for k in ("experiment_ids", "start_time", "end_time")},
            "filter_string": "status = 'ERROR'",
            "limit": 10,
            "min_count": 5,
        },
    )
    first = row["data"][0]
    assert detail["n11"] == first["trace_count"]
    assert detail["slice_count"] == row["slice_count"]
    assert detail["total_count"] == row["total_count"]
    assert detail["n11"] + detail["n10"] + detail["n01"] + detail["n00"] == row["total_count"]
    assert detail["npmi_score"] == first["npmi_score"]
    assert abs(detail["pair_npmi"] - first["npmi_score"]) < 1e-9
    shot(page, "npmi-detail.png")

    # A chart point as the slice: one day's traces, picked with the keyboard.
    page.locator("#overview-charts figure:nth-child(1) rect.hit").nth(3).focus()
    page.keyboard.press("Enter")
    page.wait_for_url("**slice=timestamp_ms**")
    page.wait_for_function(
        "document.querySelector('#correlations .state').dataset.state !== 'loading'"
    )
    caption = shown(page, "#correlation-table caption")
    day = buckets(page)[3]
    in_day = api(
        base_url,
        "traffic-cost/volume",
        {**request, "start_time": day, "end_time": day + 86_400_000},
    )["summary"]["count"]
    assert caption["slice_count"] == in_day
