"""End to end: the stack of docker-compose.yml, as real processes on loopback ports, no Docker.

* PostgreSQL: the machine's; the test creates (and drops) the database ``insights_e2e`` and its
  reader role (``INSIGHTS_TEST_E2E_DB_NAME`` names another database).
* ``mlflow server`` against it: MLflow creates and migrates the schema, as in the stack.
* ``deploy/create_readonly_role.py``: the stack's one-shot job creates the read-only role.
* ``insights-server`` logged in as that role.
* nginx running ``deploy/nginx.conf.template``, rendered with the variables compose sets, in the
  foreground with its own prefix, pid and logs in a temporary folder (never the system nginx).

Traces are logged with the MLflow client THROUGH nginx (tracking URI = nginx), with controlled
timestamps, errors, tags, TOOL spans, token usage and feedback. Every insights endpoint the app
lists in its OpenAPI document is then called THROUGH nginx under both prefixes, and the numbers
are checked against what was logged; non-insights paths must reach MLflow. Headless Chromium
renders ``/docs`` with every host name but 127.0.0.1 unresolvable, and the test checks that the
operations are on the page and that no connection left the machine.

MLflow's own trace-metrics API (``POST .../traces/metrics``, ``.../calculate-filter-correlation``)
is answered by the service through nginx, equal to MLflow's own answers; ``GET`` there still
reaches MLflow; with the service stopped nginx falls back to MLflow. MLflow's own web UI, opened
through nginx in the same Chromium (driven by Playwright, ``tests/mlflow_ui.py``), shows the
logged numbers on each sub-tab of the experiment's Overview, every ``traces/metrics`` call it made
answered by the service; screenshots go to ``test-artifacts/mlflow-ui/``.

nginx and Chromium come from Debian (``deploy/install-e2e-deps.sh``, which ``.ci/run`` calls). If
either is missing the test is skipped, except in CI (``CI=true``), where that is a failure.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
from mlflow.store.analytics.trace_correlation import calculate_npmi_from_counts

from service.demo.generate import SYNC_TRACE_LOGGING, mlflow_tracking
from tests.conftest import (
    AJAX_API,
    API,
    PG_ADMIN_URL,
    enabled_backends,
    worker_database_name,
)
from tests.test_deploy_files import DOCKERFILE, healthcheck_command

ROOT = Path(__file__).resolve().parents[1]
NGINX_TEMPLATE = ROOT / "deploy" / "nginx.conf.template"
ROLE_JOB = ROOT / "deploy" / "create_readonly_role.py"
# Dropped and re-created.
DB_NAME = worker_database_name(os.environ.get("INSIGHTS_TEST_E2E_DB_NAME", "insights_e2e"))
READER_ROLE = f"{DB_NAME}_reader"
READER_PASSWORD = "e2e-reader-pw"
EXPERIMENT = "e2e-deploy"
IN_CI = os.environ.get("CI", "").lower() == "true"
PYTHONPATH = os.environ.get("PYTHONPATH", "")


def _binary(name: str, *fallbacks: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    return next((path for path in fallbacks if os.access(path, os.X_OK)), None)


NGINX = _binary("nginx", "/usr/sbin/nginx")
CHROMIUM = _binary("chromium", "/usr/bin/chromium") or _binary("chromium-browser")

# --------------------------------------------------------------------------- the traces logged

HOUR_MS = 3_600_000
NS_PER_MS = 1_000_000
T0 = int(datetime(2026, 10, 1, tzinfo=UTC).timestamp() * 1000)
WINDOW_START, WINDOW_END = T0, T0 + 3 * HOUR_MS  # three hour buckets
BUCKETS = [T0 + k * HOUR_MS for k in range(3)]
LLM_MODEL, LLM_PROVIDER = "gpt-4o", "openai"
ERROR_TRACES = {2, 5, 9}


@dataclass(frozen=True)
class PlannedTrace:
    index: int
    timestamp_ms: int
    latency_ms: int
    error: bool
    tags: dict[str, str]
    tools: tuple[tuple[str, int, bool], ...]  # (tool name, duration ms, the call errored)
    input_tokens: int
    output_tokens: int
    correctness: bool | None  # feedback from an LLM judge
    helpfulness: int | None  # feedback from a human
    trace_id: str = ""

    @property
    def in_window(self) -> bool:
        return WINDOW_START <= self.timestamp_ms < WINDOW_END

    @property
    def bucket(self) -> int:
        return T0 + (self.timestamp_ms - T0) // HOUR_MS * HOUR_MS


def plan_traces() -> list[PlannedTrace]:
    """Twelve traces, four per hour of the window, and one after the window that must count
    nowhere. Traces 2, 5 and 9 are errors; 2 and 9 because a tool call failed."""
    traces = []
    for i in range(12):
        tools: list[tuple[str, int, bool]] = []
        if i % 2 == 0:
            tools.append(("search_orders", 30 + 10 * i, i == 2))
        if i % 3 == 0:
            tools.append(("get_weather", 100 + 20 * i, i == 9))
        traces.append(
            PlannedTrace(
                index=i,
                timestamp_ms=T0 + (i // 4) * HOUR_MS + (i % 4) * 600_000 + 60_000,
                latency_ms=400 + 50 * i,
                error=i in ERROR_TRACES,
                tags={"persona": "admin" if i % 3 == 0 else "user", "env": "prod"},
                tools=tuple(tools),
                input_tokens=100 + 10 * i,
                output_tokens=20 + i,
                correctness=(i not in ERROR_TRACES) if i < 8 else None,
                helpfulness=i % 5 + 1 if i < 6 else None,
            )
        )
    traces.append(  # outside the window: its error, tag, tool call and feedback count nowhere
        PlannedTrace(
            index=12,
            timestamp_ms=WINDOW_END + 2 * HOUR_MS,
            latency_ms=5000,
            error=True,
            tags={"persona": "admin", "env": "staging"},
            tools=(("search_orders", 999, True),),
            input_tokens=5000,
            output_tokens=500,
            correctness=False,
            helpfulness=1,
        )
    )
    return traces


@contextmanager
def mlflow_client_env(tracking_uri: str) -> Iterator[None]:
    """Point the MLflow client at ``tracking_uri`` with synchronous trace export; restore the
    caller's MLflow state afterwards (other tests build their databases with MLflow too)."""
    env = {
        **SYNC_TRACE_LOGGING,  # a trace is stored when end() returns
        "MLFLOW_MODEL_CATALOG_URI": "",  # price LLM calls from MLflow's bundled catalog
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    with mlflow_tracking(tracking_uri, env):
        yield


def log_traces(tracking_uri: str, plans: list[PlannedTrace]) -> tuple[str, list[PlannedTrace]]:
    """Log the planned traces through ``tracking_uri`` (nginx); return the experiment id and the
    plans with their trace ids."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import AssessmentSource, SpanStatus, SpanStatusCode, SpanType
    from mlflow.tracing.constant import SpanAttributeKey

    def status(error: bool) -> SpanStatus:
        if error:
            return SpanStatus(SpanStatusCode.ERROR, description="failed")
        return SpanStatus(SpanStatusCode.OK)

    logged = []
    with mlflow_client_env(tracking_uri):
        experiment_id = MlflowClient(tracking_uri).create_experiment(
            EXPERIMENT, tags={"mlflow.experimentKind": "genai_development"}
        )
        for plan in plans:
            start = plan.timestamp_ms * NS_PER_MS
            root = mlflow.start_span_no_context(
                "agent",
                span_type=SpanType.AGENT,
                inputs={"question": f"question {plan.index}"},
                tags=plan.tags,
                experiment_id=experiment_id,
                start_time_ns=start,
            )
            usage = {
                "input_tokens": plan.input_tokens,
                "output_tokens": plan.output_tokens,
                "total_tokens": plan.input_tokens + plan.output_tokens,
            }
            llm_attributes: dict[str, Any] = {
                SpanAttributeKey.MODEL: LLM_MODEL,
                SpanAttributeKey.MODEL_PROVIDER: LLM_PROVIDER,
                SpanAttributeKey.CHAT_USAGE: usage,
            }
            llm = mlflow.start_span_no_context(
                "chat.completions.create",
                span_type=SpanType.LLM,
                parent_span=root,
                inputs={"model": LLM_MODEL, "messages": [{"role": "user", "content": "hi"}]},
                attributes=llm_attributes,
                start_time_ns=start + 5 * NS_PER_MS,
            )
            llm.end(outputs={"choices": []}, end_time_ns=start + 55 * NS_PER_MS)
            at_ms = 60
            for name, duration_ms, failed in plan.tools:
                tool = mlflow.start_span_no_context(
                    name,
                    span_type=SpanType.TOOL,
                    parent_span=root,
                    inputs={"query": name},
                    start_time_ns=start + at_ms * NS_PER_MS,
                )
                at_ms += duration_ms
                tool.end(status=status(failed), end_time_ns=start + at_ms * NS_PER_MS)
                at_ms += 5
            assert at_ms < plan.latency_ms
            root.end(
                outputs={"answer": "done"},
                status=status(plan.error),
                end_time_ns=start + plan.latency_ms * NS_PER_MS,
            )
            trace_id = root.trace_id
            if plan.correctness is not None:
                mlflow.log_feedback(
                    trace_id=trace_id,
                    name="correctness",
                    value=plan.correctness,
                    source=AssessmentSource(source_type="LLM_JUDGE", source_id="e2e-judge"),
                )
            if plan.helpfulness is not None:
                mlflow.log_feedback(
                    trace_id=trace_id,
                    name="helpfulness",
                    value=plan.helpfulness,
                    source=AssessmentSource(source_type="HUMAN", source_id="e2e-reviewer"),
                )
            logged.append(PlannedTrace(**{**plan.__dict__, "trace_id": trace_id}))
    return experiment_id, logged


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_the_store_answers_as_live(insights_url: str, experiment_id: str) -> None:
    """The service runs with its analytics store on, as deployed: its sync loop copies the new
    traces within a few cycles. Wait until a store answer equals the live one (``no-cache``),
    so the tests below check the store path through nginx."""
    body = {"experiment_ids": [experiment_id], "time_bucket": "hour"}
    url = f"{insights_url}{API}/traffic-cost/volume"
    deadline, store, live = time.monotonic() + 90, None, None
    with local_http() as http:
        while time.monotonic() < deadline:
            live = http.post(url, json=body, headers={"Cache-Control": "no-cache"})
            store = http.post(url, json=body)
            assert live.status_code == 200, live.text
            assert live.headers["x-insights-answered-by"] == "live"
            if store.headers.get("x-insights-answered-by") == "store" and (
                store.content == live.content
            ):
                return
            time.sleep(1)
    raise AssertionError(
        f"the store did not catch up in 90 s: store {store and store.text}, "
        f"live {live and live.text}"
    )


def local_http() -> httpx.Client:
    # trust_env=False: no proxy from the environment between the test and loopback.
    return httpx.Client(trust_env=False, timeout=30)


class Processes:
    """The processes the stack starts, each in its own session, logging to a file. ``stop_all``
    ends each one's process group (the process and the children it forked), and nothing else."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.commands: dict[str, tuple[list[str], dict[str, str]]] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        # Appending: a restarted process keeps its earlier lines in the same log.
        with (self.log_dir / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.log_dir,
                start_new_session=True,
            )
        self.procs[name] = proc
        self.commands[name] = (argv, env)
        return proc

    def restart(self, name: str) -> subprocess.Popen[bytes]:
        return self.start(name, *self.commands[name])

    def log(self, name: str, lines: int = 60) -> str:
        path = self.log_dir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_http(self, name: str, url: str, timeout: float) -> None:
        """Wait until ``url`` answers 200, failing early (with the log) if the process dies."""
        proc, deadline = self.procs[name], time.monotonic() + timeout
        with local_http() as http:
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"{name} exited ({proc.returncode}):\n{self.log(name)}")
                with suppress(httpx.HTTPError):
                    if http.get(url, timeout=5).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    pytest.fail(f"{name} not ready at {url} after {timeout}s:\n{self.log(name)}")
                time.sleep(0.5)

    def stop(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        # A worker the leader left behind still carries the leader's group id.
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def stop_all(self) -> None:
        for name in reversed(self.procs):
            self.stop(name)


def child_env(**extra: str) -> dict[str, str]:
    """The test's environment without INSIGHTS_* settings (the service gets flags instead)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSIGHTS_")}
    env.update(MLFLOW_DISABLE_TELEMETRY="true", NO_PROXY="127.0.0.1,localhost", **extra)
    return env


def render_nginx_template(template: str, values: dict[str, str]) -> str:
    """What the official nginx image's envsubst step does with NGINX_ENVSUBST_FILTER=^NGINX_:
    replace ``${NAME}`` for the given names and leave every other ``$`` alone."""
    placeholders = set(re.findall(r"\$\{(NGINX_[A-Z_]+)\}", template))
    assert placeholders == set(values), (placeholders, set(values))
    for name, value in values.items():
        template = template.replace("${" + name + "}", value)
    return template


def nginx_main_conf(prefix: Path, server_conf: Path) -> str:
    """The image's nginx.conf, reduced: everything nginx writes stays under ``prefix``; the
    rendered template is included inside ``http``, as the image includes conf.d/*.conf."""
    return f"""
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {server_conf};
}}
"""


def recreate_database(admin_url: sa.URL) -> None:
    engine = sa.create_engine(admin_url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)'))
        conn.execute(sa.text(f'DROP ROLE IF EXISTS "{READER_ROLE}"'))
        conn.execute(sa.text(f'CREATE DATABASE "{DB_NAME}"'))
    engine.dispose()


def drop_database(admin_url: sa.URL) -> None:
    engine = sa.create_engine(admin_url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)'))
        conn.execute(sa.text(f'DROP ROLE IF EXISTS "{READER_ROLE}"'))
    engine.dispose()


@dataclass
class Stack:
    nginx_url: str
    insights_url: str
    mlflow_url: str
    reader_url: str  # MLflow-style URL of the read-only role
    experiment_id: str
    traces: list[PlannedTrace]
    processes: Processes
    work_dir: Path
    nginx_prefix: Path
    responses: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def in_window(self) -> list[PlannedTrace]:
        return [t for t in self.traces if t.in_window]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if "postgresql" not in enabled_backends():
        pytest.skip("needs PostgreSQL, which INSIGHTS_TEST_BACKENDS leaves out")
    missing = [name for name, path in (("nginx", NGINX), ("chromium", CHROMIUM)) if not path]
    if missing:
        reason = f"{' and '.join(missing)} not installed; run deploy/install-e2e-deps.sh as root"
        if IN_CI:
            pytest.fail(f"{reason} (CI=true: the end-to-end test must run in CI)")
        pytest.skip(reason)
    assert NGINX is not None

    admin_url = sa.make_url(PG_ADMIN_URL)
    owner_url = admin_url.set(database=DB_NAME)
    reader_url = admin_url.set(
        drivername="postgresql", username=READER_ROLE, password=READER_PASSWORD, database=DB_NAME
    ).render_as_string(hide_password=False)
    work_dir = tmp_path_factory.mktemp("e2e")
    # nginx's workers run as `nobody` when the master is root: its folder must be reachable,
    # and pytest's own temporary folders are private to their owner.
    nginx_prefix = Path(tempfile.mkdtemp(prefix="insights-e2e-nginx-"))
    nginx_prefix.chmod(0o755)
    mlflow_port, insights_port, nginx_port = free_port(), free_port(), free_port()
    processes = Processes(work_dir)

    with ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, nginx_prefix, ignore_errors=True)
        recreate_database(admin_url)
        cleanup.callback(drop_database, admin_url)
        cleanup.callback(processes.stop_all)  # runs before the database is dropped

        # 1. MLflow's server creates and migrates the schema before it listens.
        mlflow_url = f"http://127.0.0.1:{mlflow_port}"
        processes.start(
            "mlflow",
            [
                *(sys.executable, "-m", "mlflow", "server"),
                *("--backend-store-uri", owner_url.render_as_string(hide_password=False)),
                *("--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1"),
                *("--artifacts-destination", str(work_dir / "mlartifacts")),
            ],
            # No job runner (huey consumers for scorers): nothing here uses it, and it roughly
            # doubles the server's start and stop times.
            child_env(
                MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
                # Price LLM spans from MLflow's bundled catalog, the copy check_cost reads.
                MLFLOW_MODEL_CATALOG_URI="",
                # As docker-compose.yml passes them when unset: MLflow's defaults apply.
                MLFLOW_SERVER_ALLOWED_HOSTS="",
                MLFLOW_SERVER_CORS_ALLOWED_ORIGINS="",
            ),
        )
        processes.wait_http("mlflow", f"{mlflow_url}/health", timeout=240)

        # 2. The stack's one-shot job: the read-only role, from migrations_readonly's SQL.
        job = subprocess.run(
            [sys.executable, str(ROLE_JOB)],
            env=child_env(
                MLFLOW_DATABASE_URL=owner_url.render_as_string(hide_password=False),
                INSIGHTS_READER_ROLE=READER_ROLE,
                INSIGHTS_READER_PASSWORD=READER_PASSWORD,
                WAIT_SECONDS="60",
            ),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert job.returncode == 0, job.stdout + job.stderr

        # 3. Trace Insights, logged in as the read-only role.
        insights_url = f"http://127.0.0.1:{insights_port}"
        processes.start(
            "insights",
            [
                *(sys.executable, "-m", "service.cli", "--backend-store-uri", reader_url),
                *("--host", "127.0.0.1", "--port", str(insights_port)),
            ],
            # The code under test, also when the venv's editable install is another checkout.
            child_env(PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), PYTHONPATH]))),
        )
        processes.wait_http("insights", f"{insights_url}/ready", timeout=90)

        # 4. nginx with the compose template, rendered with the same three variables.
        server_conf = nginx_prefix / "default.conf"
        server_conf.write_text(
            render_nginx_template(
                NGINX_TEMPLATE.read_text(),
                {
                    "NGINX_LISTEN": f"127.0.0.1:{nginx_port}",
                    "NGINX_MLFLOW_UPSTREAM": f"127.0.0.1:{mlflow_port}",
                    "NGINX_INSIGHTS_UPSTREAM": f"127.0.0.1:{insights_port}",
                },
            )
        )
        main_conf = nginx_prefix / "nginx.conf"
        main_conf.write_text(nginx_main_conf(nginx_prefix, server_conf))
        nginx_argv = [NGINX, "-p", f"{nginx_prefix}/", "-c", str(main_conf)]
        nginx_argv += ["-e", str(nginx_prefix / "error.log")]
        checked = subprocess.run(
            [*nginx_argv, "-t"], capture_output=True, text=True, timeout=30, check=False
        )
        assert checked.returncode == 0, checked.stderr
        processes.start("nginx", [*nginx_argv, "-g", "daemon off;"], child_env())
        nginx_url = f"http://127.0.0.1:{nginx_port}"
        processes.wait_http("nginx", f"{nginx_url}/health", timeout=30)

        # 5. Traces, through nginx; then the analytics store (on, as deployed) catches up.
        experiment_id, traces = log_traces(nginx_url, plan_traces())
        wait_until_the_store_answers_as_live(insights_url, experiment_id)
        yield Stack(
            nginx_url=nginx_url,
            insights_url=insights_url,
            mlflow_url=mlflow_url,
            reader_url=reader_url,
            experiment_id=experiment_id,
            traces=traces,
            processes=processes,
            work_dir=work_dir,
            nginx_prefix=nginx_prefix,
        )


# --------------------------------------------------------------------------- expected numbers


def percentiles(values: list[float], *qs: int) -> list[float]:
    return [float(np.percentile(values, q)) for q in qs]


def approx(value: float | None) -> Any:
    return None if value is None else pytest.approx(value, rel=1e-9, abs=1e-9)


def tool_calls(
    traces: list[PlannedTrace], tool: str | None
) -> list[tuple[PlannedTrace, int, bool]]:
    return [
        (t, duration, failed)
        for t in traces
        for name, duration, failed in t.tools
        if tool is None or name == tool
    ]


def expected_tool_info(traces: list[PlannedTrace], tool: str | None) -> dict[str, Any]:
    calls = tool_calls(traces, tool)
    durations = [float(d) for _, d, _ in calls]
    errors = sum(failed for _, _, failed in calls)
    p50, p90, p99 = percentiles(durations, 50, 90, 99)
    volume, latency, error_series = [], [], []
    for bucket in BUCKETS:
        in_bucket = [(t, d, f) for t, d, f in calls if t.bucket == bucket]
        ds = [float(d) for _, d, _ in in_bucket]
        errs = sum(f for _, _, f in in_bucket)
        volume.append(
            {
                "time_bucket": bucket,
                "trace_count": len({t.index for t, _, _ in in_bucket}),
                "invocation_count": len(in_bucket),
            }
        )
        bp = percentiles(ds, 50, 90, 99) if ds else [None, None, None]
        latency.append(
            {
                "time_bucket": bucket,
                "avg_latency": approx(sum(ds) / len(ds)) if ds else None,
                "p50_latency": approx(bp[0]),
                "p90_latency": approx(bp[1]),
                "p99_latency": approx(bp[2]),
            }
        )
        error_series.append(
            {
                "time_bucket": bucket,
                "error_count": errs,
                "error_rate": approx(100 * errs / len(ds)) if ds else None,
            }
        )
    return {
        "tool_name": tool,
        "trace_count": len({t.index for t, _, _ in calls}),
        "invocation_count": len(calls),
        "error_count": errors,
        "error_rate": approx(100 * errors / len(calls)),
        "avg_latency": approx(sum(durations) / len(durations)),
        "p50_latency": approx(p50),
        "p90_latency": approx(p90),
        "p99_latency": approx(p99),
        "time_series": {"volume": volume, "latency": latency, "errors": error_series},
    }


def has_value(trace: PlannedTrace, dimension: str, value: str) -> bool:
    """Whether a trace has a correlations row's (dimension, value), from the plan."""
    if dimension == "status":
        return ("ERROR" if trace.error else "OK") == value
    if dimension == "span_type":
        return value in {"AGENT", "LLM"} or (value == "TOOL" and bool(trace.tools))
    if dimension == "tool":
        return any(name == value for name, _, _ in trace.tools)
    if dimension == "tool_error":
        return any(name == value and failed for name, _, failed in trace.tools)
    if dimension == "tag":
        key, _, text = value.partition("=")
        return trace.tags.get(key) == text
    raise AssertionError(f"no plan-based oracle for dimension {dimension!r}")


# --------------------------------------------------------------------------- endpoint checks

Check = Callable[[Stack, dict[str, Any]], None]


def check_volume(stack: Stack, got: dict[str, Any]) -> None:
    traces = stack.in_window
    assert got["summary"] == {"count": 12, "ok_count": 9, "error_count": 3}
    assert got["time_series"] == [
        {"time_bucket": b, "count": 4, "ok_count": 3, "error_count": 1} for b in BUCKETS
    ]
    assert len(traces) == 12


def check_latency(stack: Stack, got: dict[str, Any]) -> None:
    latencies = [float(t.latency_ms) for t in stack.in_window]
    p50, p90, p95, p99 = percentiles(latencies, 50, 90, 95, 99)
    assert got["summary"] == {
        "count": 12,
        "p50_latency": approx(p50),
        "p90_latency": approx(p90),
        "p95_latency": approx(p95),
        "p99_latency": approx(p99),
        "avg_latency": approx(sum(latencies) / 12),
        "min_latency": approx(min(latencies)),
        "max_latency": approx(max(latencies)),
    }
    for point, bucket in zip(got["time_series"], BUCKETS, strict=True):
        values = [float(t.latency_ms) for t in stack.in_window if t.bucket == bucket]
        b50, b90, b95, b99 = percentiles(values, 50, 90, 95, 99)
        assert point == {
            "time_bucket": bucket,
            "count": 4,
            "p50_latency": approx(b50),
            "p90_latency": approx(b90),
            "p95_latency": approx(b95),
            "p99_latency": approx(b99),
            "avg_latency": approx(sum(values) / 4),
        }


def check_errors(stack: Stack, got: dict[str, Any]) -> None:
    assert got["summary"] == {"total_count": 12, "error_count": 3, "error_rate": approx(25.0)}
    assert got["time_series"] == [
        {"time_bucket": b, "total_count": 4, "error_count": 1, "error_rate": approx(25.0)}
        for b in BUCKETS
    ]


def check_tokens(stack: Stack, got: dict[str, Any]) -> None:
    traces = stack.in_window
    totals = [float(t.input_tokens + t.output_tokens) for t in traces]
    p50, p90, p99 = percentiles(totals, 50, 90, 99)
    assert got["summary"] == {
        "trace_count": 12,
        "input_tokens": sum(t.input_tokens for t in traces),
        "output_tokens": sum(t.output_tokens for t in traces),
        "total_tokens": int(sum(totals)),
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
        "avg_total_tokens": approx(sum(totals) / 12),
        "p50_total_tokens": approx(p50),
        "p90_total_tokens": approx(p90),
        "p99_total_tokens": approx(p99),
    }
    for point, bucket in zip(got["time_series"], BUCKETS, strict=True):
        mine = [t for t in traces if t.bucket == bucket]
        assert point == {
            "time_bucket": bucket,
            "trace_count": 4,
            "input_tokens": sum(t.input_tokens for t in mine),
            "output_tokens": sum(t.output_tokens for t in mine),
            "total_tokens": sum(t.input_tokens + t.output_tokens for t in mine),
        }


def catalog_prices(model: str, provider: str) -> tuple[float, float]:
    """USD per input and per output token of ``model`` in MLflow's model catalog, the table
    MLflow's server prices each LLM span from when it stores it (both sides read the bundled
    copy: MLFLOW_MODEL_CATALOG_URI is empty here and for the server)."""
    from mlflow.utils.providers import get_models

    [entry] = [m for m in get_models(provider) if m["model"] == model]
    input_price, output_price = entry["input_cost_per_token"], entry["output_cost_per_token"]
    assert input_price and output_price, entry
    return float(input_price), float(output_price)


def check_cost(stack: Stack, got: dict[str, Any]) -> None:
    # Expected cost = the tokens this test logged x the catalog's prices, never the service's
    # own numbers: a service that priced every token alike, or summed the wrong spans, fails.
    with mlflow_client_env(stack.nginx_url):
        input_price, output_price = catalog_prices(LLM_MODEL, LLM_PROVIDER)

    def costs(traces: list[PlannedTrace]) -> dict[str, Any]:
        input_cost = sum(t.input_tokens * input_price for t in traces)
        output_cost = sum(t.output_tokens * output_price for t in traces)
        return {
            "total_cost": approx(input_cost + output_cost),
            "input_cost": approx(input_cost),
            "output_cost": approx(output_cost),
        }

    traces = stack.in_window
    assert got["summary"] == {**costs(traces), "trace_count": 12}
    assert got["time_series"] == [
        {"time_bucket": bucket, **costs([t for t in traces if t.bucket == bucket])}
        for bucket in BUCKETS
    ]
    assert got["by_model"] == [
        {
            "model_name": LLM_MODEL,
            "model_provider": LLM_PROVIDER,
            "span_count": 12,
            **costs(traces),
        }
    ]


def check_assessments_discovery(stack: Stack, got: dict[str, Any]) -> None:
    assert got["data"] == [
        {
            "assessment_name": "correctness",
            "assessment_type": "boolean",
            "sources": ["LLM_JUDGE"],
            "trace_count": 8,
            "assessment_count": 8,
            "error_count": 0,
        },
        {
            "assessment_name": "helpfulness",
            "assessment_type": "numeric",
            "sources": ["HUMAN"],
            "trace_count": 6,
            "assessment_count": 6,
            "error_count": 0,
        },
    ]


def check_assessments_metrics(stack: Stack, got: dict[str, Any]) -> None:
    assert got["assessment_name"] == "correctness"
    assert got["assessment_type"] == "boolean"
    assert got["sources"] == ["LLM_JUDGE"]
    assert got["summary"] == {
        "total_count": 8,
        "pass_count": 6,
        "failure_count": 2,
        "failure_rate": approx(25.0),
        "error_count": 0,
    }
    assert got["time_series"] == [
        {"time_bucket": BUCKETS[0], "total_count": 4, "failure_count": 1, "failure_rate": 25.0},
        {"time_bucket": BUCKETS[1], "total_count": 4, "failure_count": 1, "failure_rate": 25.0},
        {"time_bucket": BUCKETS[2], "total_count": 0, "failure_count": 0, "failure_rate": None},
    ]


def check_tools_discovery(stack: Stack, got: dict[str, Any]) -> None:
    assert got["data"] == [
        expected_tool_info(stack.in_window, "search_orders"),
        expected_tool_info(stack.in_window, "get_weather"),
    ]


def check_tools_metrics(stack: Stack, got: dict[str, Any]) -> None:
    assert got["data"] == expected_tool_info(stack.in_window, "search_orders")


def check_tags_discovery(stack: Stack, got: dict[str, Any]) -> None:
    assert sorted(got["data"], key=lambda row: row["tag_key"]) == [
        {"tag_key": "env", "trace_count": 12, "unique_values": 1},
        {"tag_key": "persona", "trace_count": 12, "unique_values": 2},
    ]


def check_tags_metrics(stack: Stack, got: dict[str, Any]) -> None:
    assert got["data"] == {
        "tag_key": "persona",
        "trace_count": 12,
        "unique_values": 2,
        "top_values": [
            {"value": "user", "count": 8, "percentage": approx(100 * 8 / 12)},
            {"value": "admin", "count": 4, "percentage": approx(100 * 4 / 12)},
        ],
        "other_count": 0,
    }


def check_dimensions_discovery(stack: Stack, got: dict[str, Any]) -> None:
    dimensions = {d["name"]: d for d in got["data"]}
    assert {
        "status",
        "span.type",
        "span.name",
        "latency",
        "tools.search_orders",
        "tools.get_weather",
        "tags.persona",
        "tags.env",
        "assessment.correctness",
        "assessment.helpfulness",
    } <= set(dimensions)

    def enum(name: str) -> set[str]:
        (value,) = [p for p in dimensions[name]["parameters"] if p["name"] == "value"]
        return set(value["enum_values"])

    assert enum("status") == {"OK", "ERROR"}
    assert enum("span.type") == {"AGENT", "LLM", "TOOL"}
    assert enum("tags.persona") == {"admin", "user"}


def npmi_counts(
    stack: Stack, first: Callable[[PlannedTrace], bool], second: Callable[[PlannedTrace], bool]
) -> tuple[int, int, int, int]:
    traces = stack.in_window
    n1 = sum(first(t) for t in traces)
    n2 = sum(second(t) for t in traces)
    n11 = sum(first(t) and second(t) for t in traces)
    return n11, n1, n2, len(traces)


def check_calculate_npmi(stack: Stack, got: dict[str, Any]) -> None:
    # status = ERROR against tags.persona = admin: traces {2, 5, 9} and {0, 3, 6, 9}.
    n11, n1, n2, total = npmi_counts(
        stack, lambda t: t.error, lambda t: t.tags["persona"] == "admin"
    )
    assert (n11, n1, n2, total) == (1, 3, 4, 12)
    expected = calculate_npmi_from_counts(n11, n1, n2, total)
    assert got["dimension1"]["count"] == n1
    assert got["dimension2"]["count"] == n2
    assert got["intersection"] == {"count": n11}
    assert got["total_count"] == total
    assert got["correlation"]["npmi_score"] == approx(expected.npmi)
    assert got["correlation"]["npmi_smoothed"] == approx(expected.npmi_smoothed)
    assert got["correlation"]["strength"] in ("Strong", "Moderate", "Weak")
    # MLflow computes the same correlation from the dimensions' filter strings, asked directly
    # (its REST API; nginx sends this route to the service), over the same window.
    from mlflow.tracing.client import TracingClient

    with mlflow_client_env(stack.mlflow_url):
        mlflow_result = TracingClient(stack.mlflow_url).calculate_trace_filter_correlation(
            experiment_ids=[stack.experiment_id],
            filter_string1=got["dimension1"]["filter_string"],
            filter_string2=got["dimension2"]["filter_string"],
            base_filter=f"timestamp_ms >= {WINDOW_START} AND timestamp_ms < {WINDOW_END}",
        )
    assert (
        mlflow_result.joint_count,
        mlflow_result.filter1_count,
        mlflow_result.filter2_count,
        mlflow_result.total_count,
    ) == (n11, n1, n2, total)
    assert got["correlation"]["npmi_score"] == approx(mlflow_result.npmi)


def check_correlations(stack: Stack, got: dict[str, Any]) -> None:
    traces = stack.in_window
    assert got["slice_count"] == 3
    assert got["total_count"] == 12
    rows = got["data"]
    assert rows, "an ERROR slice with failed tool calls must correlate with something"
    scores = [row["npmi_score"] for row in rows]
    assert scores == sorted(scores, reverse=True)
    assert ("status", "ERROR") not in {(row["dimension"], row["value"]) for row in rows}
    checked = 0
    for row in rows:
        assert row["npmi_score"] is None or -1.0 <= row["npmi_score"] <= 1.0
        if row["dimension"] == "assessment":
            continue
        n1 = sum(t.error for t in traces)
        n2 = sum(has_value(t, row["dimension"], row["value"]) for t in traces)
        n11 = sum(t.error and has_value(t, row["dimension"], row["value"]) for t in traces)
        expected = calculate_npmi_from_counts(n11, n1, n2, len(traces))
        assert row["trace_count"] == n11, row
        assert row["npmi_score"] == approx(expected.npmi), row
        assert row["percentage_of_slice"] == approx(100 * n11 / n1), row
        assert row["percentage_of_total"] == approx(100 * n2 / len(traces)), row
        checked += 1
    assert checked >= 3
    # The two failed tool calls were in ERROR traces: each is among the strongest signals.
    top = {(row["dimension"], row["value"]) for row in rows[:4]}
    assert {("tool_error", "search_orders"), ("tool_error", "get_weather")} <= top


# endpoint (relative to the prefix) -> extra request fields and the check of its answer
ENDPOINTS: dict[str, tuple[dict[str, Any], Check]] = {
    "traffic-cost/volume": ({}, check_volume),
    "traffic-cost/latency": ({}, check_latency),
    "traffic-cost/errors": ({}, check_errors),
    "traffic-cost/tokens": ({}, check_tokens),
    "traffic-cost/cost": ({}, check_cost),
    "assessments/discovery": ({}, check_assessments_discovery),
    "assessments/metrics": ({"assessment_name": "correctness"}, check_assessments_metrics),
    "tools/discovery": ({}, check_tools_discovery),
    "tools/metrics": ({"tool_name": "search_orders"}, check_tools_metrics),
    "tags/discovery": ({}, check_tags_discovery),
    "tags/metrics": ({"tag_key": "persona"}, check_tags_metrics),
    "dimensions/discovery": ({}, check_dimensions_discovery),
    "dimensions/calculate-npmi": (
        {
            "dimension1": {"name": "status", "parameters": {"value": "ERROR"}},
            "dimension2": {"name": "tags.persona", "parameters": {"value": "admin"}},
        },
        check_calculate_npmi,
    ),
    "correlations": ({"filter_string": "status = 'ERROR'", "limit": 50}, check_correlations),
}


def insights_endpoints(openapi: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every insights endpoint of the OpenAPI document -> its request body schema."""
    schemas = openapi["components"]["schemas"]
    found = {}
    for path, operations in openapi["paths"].items():
        if not path.startswith(f"{API}/"):
            continue
        assert set(operations) == {"post"}, (path, set(operations))
        schema = operations["post"]["requestBody"]["content"]["application/json"]["schema"]
        if "$ref" in schema:
            schema = schemas[schema["$ref"].rsplit("/", 1)[1]]
        found[path.removeprefix(f"{API}/")] = schema
    return found


def request_body(stack: Stack, endpoint: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The common fields the endpoint accepts, plus its own (ENDPOINTS)."""
    common = {
        "experiment_ids": [stack.experiment_id],
        "start_time": WINDOW_START,
        "end_time": WINDOW_END,
        "time_bucket": "hour",
        "timezone": "UTC",
    }
    properties = schema.get("properties", {})
    body = {k: v for k, v in common.items() if k in properties}
    body.update(ENDPOINTS.get(endpoint, ({}, None))[0])
    missing = set(schema.get("required", [])) - set(body)
    assert not missing, f"{endpoint}: add its required fields {sorted(missing)} to ENDPOINTS"
    return body


# --------------------------------------------------------------------------- the tests


def test_every_insights_endpoint_through_nginx_under_both_prefixes(stack: Stack) -> None:
    with local_http() as http:
        openapi = http.get(f"{stack.insights_url}/openapi.json").json()
        endpoints = insights_endpoints(openapi)
        assert set(ENDPOINTS) <= set(endpoints), set(ENDPOINTS) - set(endpoints)
        for endpoint, schema in sorted(endpoints.items()):
            body = request_body(stack, endpoint, schema)
            answers = []
            for prefix in (API, AJAX_API):
                response = http.post(f"{stack.nginx_url}{prefix}/{endpoint}", json=body)
                assert response.status_code == 200, (prefix, endpoint, response.text)
                # The analytics store answers, and its headers pass through nginx.
                assert response.headers["x-insights-answered-by"] == "store", endpoint
                answers.append(response.json())
            assert answers[0] == answers[1], endpoint
            stack.responses[endpoint] = answers[0]
    for endpoint, (_, check) in ENDPOINTS.items():
        check(stack, stack.responses[endpoint])


def test_tool_aggregate_and_errors_through_nginx(stack: Stack) -> None:
    base = {"experiment_ids": [stack.experiment_id], "start_time": WINDOW_START}
    base["end_time"] = WINDOW_END
    with local_http() as http:
        aggregate = http.post(f"{stack.nginx_url}{API}/tools/metrics", json=base)
        assert aggregate.status_code == 200, aggregate.text
        assert aggregate.json()["data"] == expected_tool_info(stack.in_window, None)
        # Errors keep MLflow's shape through the proxy, under both prefixes.
        for prefix in (API, AJAX_API):
            unknown = http.post(
                f"{stack.nginx_url}{prefix}/traffic-cost/volume", json={**base, "bogus": 1}
            )
            assert unknown.status_code == 400
            assert unknown.json()["error_code"] == "INVALID_PARAMETER_VALUE"
            assert "bogus" in unknown.json()["message"]
            missing = http.post(
                f"{stack.nginx_url}{prefix}/traffic-cost/volume",
                json={**base, "experiment_ids": ["987654"]},
            )
            assert missing.status_code == 404
            assert missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
            # The whole prefix belongs to the service: MLflow never sees it.
            nowhere = http.post(f"{stack.nginx_url}{prefix}/no-such-endpoint", json=base)
            assert nowhere.status_code == 404
            assert nowhere.json()["error_code"] == "ENDPOINT_NOT_FOUND"


def test_everything_else_reaches_mlflow_through_nginx(stack: Stack) -> None:
    with local_http() as http:
        for prefix in ("/api", "/ajax-api"):
            found = http.get(
                f"{stack.nginx_url}{prefix}/2.0/mlflow/experiments/search",
                params={"max_results": 100},
            )
            assert found.status_code == 200, found.text
            names = {e["name"] for e in found.json()["experiments"]}
            assert EXPERIMENT in names
        # MLflow's own trace endpoints share /api/3.0/mlflow/traces with the insights prefix.
        trace = stack.traces[0]
        info = http.get(f"{stack.nginx_url}/api/3.0/mlflow/traces/{trace.trace_id}")
        assert info.status_code == 200, info.text
        assert info.json()["trace"]["trace_info"]["trace_id"] == trace.trace_id
        # /health through nginx is MLflow's (plain "OK"), not the service's JSON.
        health = http.get(f"{stack.nginx_url}/health")
        assert health.status_code == 200 and health.text.strip() == "OK"
        assert http.get(f"{stack.insights_url}/health").json() == {"status": "ok"}
        ui = http.get(f"{stack.nginx_url}/")
        assert ui.status_code == 200 and "<html" in ui.text.lower()
    # The client logged every trace and feedback through nginx.
    requests = re.findall(r'"([A-Z]+ \S+) HTTP', (stack.nginx_prefix / "access.log").read_text())
    assert "POST /api/2.0/mlflow/experiments/create" in requests
    assert "POST /v1/traces" in requests  # spans, as OTLP
    assert requests.count("POST /api/3.0/mlflow/traces") == len(stack.traces)  # StartTraceV3
    feedback = 0
    for trace in stack.traces:
        count = (trace.correctness is not None) + (trace.helpfulness is not None)
        if count:
            assert f"POST /api/3.0/mlflow/traces/{trace.trace_id}/assessments" in requests
        feedback += count
    assert sum(r.startswith("POST ") and r.endswith("/assessments") for r in requests) == feedback


def test_the_insights_page_loads_through_nginx(stack: Stack) -> None:
    with local_http() as http:
        page = http.get(f"{stack.nginx_url}/insights/")
        assert page.status_code == 200 and "<title>Trace Insights</title>" in page.text
        script = http.get(f"{stack.nginx_url}/insights/app.js")
        assert script.status_code == 200 and "javascript" in script.headers["content-type"]
        # Its experiment picker, on the same origin under the prefix the page calls.
        listed = http.post(f"{stack.nginx_url}{AJAX_API}/experiments", json={})
        assert EXPERIMENT in {e["name"] for e in listed.json()["data"]}


def test_the_images_health_check_command_works(stack: Stack) -> None:
    """The Dockerfile's HEALTHCHECK, run as written against the service: passes while it runs,
    fails where nothing answers."""
    command = healthcheck_command(DOCKERFILE)
    assert command[0] == "python"
    port = str(urlsplit(stack.insights_url).port)
    for listening, expected_ok in ((port, True), (str(free_port()), False)):
        run = subprocess.run(
            [sys.executable, *command[1:]],
            env=child_env(INSIGHTS_PORT=listening),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert (run.returncode == 0) == expected_ok, run.stderr


def test_service_logs_in_as_a_read_only_role(stack: Stack) -> None:
    url = sa.make_url(stack.reader_url).set(drivername="postgresql+psycopg2")
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM trace_info")).scalar_one() == 13
            with pytest.raises(sa.exc.DBAPIError, match=r"read-only|permission denied"):
                conn.execute(sa.text("CREATE TABLE insights_intruder (id integer)"))
    finally:
        engine.dispose()


def local_asset_urls(html: str) -> list[str]:
    return re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", html)


def test_docs_render_offline_in_headless_chromium(stack: Stack) -> None:
    assert CHROMIUM is not None
    with local_http() as http:
        for page in ("/docs", "/redoc"):
            html = http.get(f"{stack.insights_url}{page}").text
            urls = local_asset_urls(html)
            assert urls, html
            assert all(u.startswith("/") and not u.startswith("//") for u in urls), urls
            assert "https://" not in html and "http://" not in html
        openapi = http.get(f"{stack.insights_url}/openapi.json").json()
    profile = stack.work_dir / "chromium-profile"
    net_log = stack.work_dir / "chromium-netlog.json"
    argv = [
        CHROMIUM,
        *("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"),
        *("--disable-background-networking", "--disable-component-update", "--disable-sync"),
        *("--disable-extensions", "--no-default-browser-check", "--no-proxy-server"),
        f"--user-data-dir={profile}",
        # Every host name resolves to nothing but 127.0.0.1: nothing can leave the machine.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        f"--log-net-log={net_log}",
        "--virtual-time-budget=30000",  # let Swagger UI fetch openapi.json and render
        "--dump-dom",
        f"{stack.insights_url}/docs",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False)
    dom = done.stdout
    assert done.returncode == 0 and dom, done.stderr[-3000:]
    rendered = set(re.findall(r'data-path="([^"]+)"', dom))
    listed = {path for path in openapi["paths"]}
    assert listed <= rendered, listed - rendered
    assert f"{API}/traffic-cost/volume" in rendered
    assert "Failed to load API definition" not in dom

    events, names = load_net_log(net_log)
    page_origin = stack.insights_url
    page_urls = {
        e["params"]["url"]
        for e in events
        if names.get(e["type"]) == "URL_REQUEST_START_JOB"
        and "url" in e.get("params", {})
        and e["params"].get("network_isolation_key", "").startswith("http://127.0.0.1")
    }
    assert {
        f"{page_origin}/docs",
        f"{page_origin}/docs-static/swagger-ui-bundle.js",
        f"{page_origin}/docs-static/swagger-ui.css",
        f"{page_origin}/openapi.json",
    } <= page_urls, page_urls
    assert all(url.startswith(f"{page_origin}/") for url in page_urls), page_urls
    # Not one TCP connection (the page's or the browser's own) went anywhere but loopback.
    remote = set()
    for e in events:
        if names.get(e["type"]) in ("TCP_CONNECT", "TCP_CONNECT_ATTEMPT"):
            params = e.get("params", {})
            for key in ("address", "remote_address"):
                if key in params:
                    remote.add(params[key])
            remote.update(params.get("address_list", []))
    assert remote, "the net log shows no connection at all"
    assert all(a.startswith("127.0.0.1:") for a in remote), remote


def load_net_log(path: Path) -> tuple[list[dict[str, Any]], dict[int, str]]:
    text = path.read_text()
    try:
        log = json.loads(text)
    except json.JSONDecodeError:  # a log cut short still has its events
        log = json.loads(text.rstrip().rstrip(",") + "]}")
    names = {number: name for name, number in log["constants"]["logEventTypes"].items()}
    return log["events"], names


# --------------------------------------------------------------------------- MLflow's trace metrics

# MLflow's own trace-metrics API (QueryTraceMetrics), which MLflow's UI calls for its Overview
# tab: nginx sends POSTs on it to the service and falls back to MLflow when the service is down.
TRACE_METRICS = "/3.0/mlflow/traces/metrics"
FILTER_CORRELATION = "/3.0/mlflow/traces/calculate-filter-correlation"
ARTIFACTS = ROOT / "test-artifacts" / "mlflow-ui"  # gitignored: the screenshots, kept after the run


def service_request_log(stack: Stack) -> dict[str, dict[str, Any]]:
    """The service's own request log (one JSON line per request), by request id."""
    entries = {}
    for line in (stack.work_dir / "insights.log").read_text(errors="replace").splitlines():
        if " service.access " in line and "{" in line:
            entry = json.loads(line[line.index("{") :])
            entries[entry["request_id"]] = entry
    return entries


def assert_answered_by_the_service(
    stack: Stack, path: str, status: int, headers: httpx.Headers | dict[str, str]
) -> None:
    """The response carries the service's headers (X-Insights-Answered-By, the request id it
    made up), and the service logged that request with this path and status: MLflow neither
    sends nor logs our ids."""
    request_id = headers.get("x-request-id")
    assert request_id, f"{path}: no X-Request-ID, so not the service's answer ({headers})"
    assert headers.get("x-insights-answered-by") in ("live", "store"), headers
    # The service writes the line once the response is sent: give it a moment.
    deadline = time.monotonic() + 10
    while (entry := service_request_log(stack).get(request_id)) is None:
        assert time.monotonic() < deadline, f"{path}: request {request_id} is not in the log"
        time.sleep(0.1)
    assert (entry["method"], entry["path"], entry["status"]) == ("POST", path, status), entry


def assert_same_trace_metrics(got: dict[str, Any], expected: dict[str, Any]) -> None:
    """Same data points in the same order, values equal to 1e-9."""
    got_points, expected_points = got.get("data_points", []), expected.get("data_points", [])
    assert [(p["metric_name"], p.get("dimensions")) for p in got_points] == [
        (p["metric_name"], p.get("dimensions")) for p in expected_points
    ]
    for point, want in zip(got_points, expected_points, strict=True):
        assert point["values"] == {k: approx(v) for k, v in want["values"].items()}, point
    assert got.get("next_page_token") == expected.get("next_page_token")


def mlflow_answer(stack: Stack, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """What MLflow's own server answers to ``body``, asked directly (not through nginx)."""
    with local_http() as http:
        response = http.post(f"{stack.mlflow_url}{path}", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def trace_count_request(stack: Stack) -> dict[str, Any]:
    """The Overview tab's request for its Traces and Errors charts, over the logged window."""
    return {
        "experiment_ids": [stack.experiment_id],
        "view_type": "TRACES",
        "metric_name": "trace_count",
        "aggregations": [{"aggregation_type": "COUNT"}],
        "time_interval_seconds": 3600,
        "start_time_ms": WINDOW_START,
        "end_time_ms": WINDOW_END,
        "dimensions": ["trace_status"],
    }


def correlation_request(stack: Stack) -> dict[str, Any]:
    return {
        "experiment_ids": [stack.experiment_id],
        "filter_string1": "trace.status = 'ERROR'",
        "filter_string2": "span.type = 'TOOL'",
    }


def test_mlflow_trace_metrics_post_reaches_the_service_and_get_reaches_mlflow(
    stack: Stack,
) -> None:
    body = trace_count_request(stack)
    expected = mlflow_answer(stack, f"/api{TRACE_METRICS}", body)
    # The logged numbers: per hour, three OK traces and one ERROR trace.
    counts = {
        (p["dimensions"]["time_bucket"], p["dimensions"]["trace_status"]): p["values"]["COUNT"]
        for p in expected["data_points"]
    }
    assert sorted(counts.values()) == [1] * 3 + [3] * 3, counts
    with local_http() as http:
        for prefix in ("/api", "/ajax-api"):
            for path, request, check in (
                (f"{prefix}{TRACE_METRICS}", body, assert_same_trace_metrics),
                (f"{prefix}{FILTER_CORRELATION}", correlation_request(stack), None),
            ):
                response = http.post(f"{stack.nginx_url}{path}", json=request)
                assert response.status_code == 200, (path, response.text)
                assert_answered_by_the_service(stack, path, 200, response.headers)
                want = mlflow_answer(stack, path, request)
                if check is not None:
                    check(response.json(), want)
                else:
                    got = response.json()
                    assert got == {k: approx(v) for k, v in want.items()}, (got, want)
        # GET on the same path is MLflow's get-trace route (the trace id "metrics"): MLflow
        # answers it, through nginx exactly as directly, and the service never sees it.
        for prefix in ("/api", "/ajax-api"):
            params = {"experiment_ids": stack.experiment_id}
            through = http.get(f"{stack.nginx_url}{prefix}{TRACE_METRICS}", params=params)
            direct = http.get(f"{stack.mlflow_url}{prefix}{TRACE_METRICS}", params=params)
            assert (through.status_code, through.text) == (direct.status_code, direct.text)
            assert "x-request-id" not in through.headers
    assert not any(
        e["method"] == "GET" and e["path"].endswith(TRACE_METRICS)
        for e in service_request_log(stack).values()
    )


def js_round(value: float) -> int:
    return math.floor(value + 0.5)  # JavaScript's Math.round, which the UI formats with


def compact(value: int) -> str:
    return str(value) if value < 1000 else f"{value / 1000:.2f}K"


def expected_overview(stack: Stack) -> dict[str, list[str]]:
    """Per sub-tab of the Overview page, text it must show: the logged numbers, computed from
    the plan (and MLflow's price catalog), formatted as the UI formats them."""
    traces = stack.in_window
    count, errors = len(traces), sum(t.error for t in traces)
    inputs = sum(t.input_tokens for t in traces)
    outputs = sum(t.output_tokens for t in traces)
    with mlflow_client_env(stack.mlflow_url):
        input_price, output_price = catalog_prices(LLM_MODEL, LLM_PROVIDER)
    cost = inputs * input_price + outputs * output_price
    correctness = [t.correctness for t in traces if t.correctness is not None]
    helpfulness = [t.helpfulness for t in traces if t.helpfulness is not None]
    helpful_avg = sum(helpfulness) / len(helpfulness)
    calls = tool_calls(traces, None)
    failed = sum(f for _, _, f in calls)
    usage = [
        f"Traces {count}",
        f"Latency {sum(t.latency_ms for t in traces) / count:.2f}ms",
        f"Errors {errors} (Overall error rate: {100 * errors / count:.1f}%)",
        f"Token Usage {compact(inputs + outputs)} ({compact(inputs)} input, "
        f"{compact(outputs)} output)",
        f"Tokens per Trace {js_round((inputs + outputs) / count)} avg per trace",
        f"Cost Breakdown ${cost:.3g} Total Cost",
        f"Cost Over Time ${cost:.3g} Total Cost",
    ]
    quality = [
        f"correctness {len(correctness)} -",
        f"helpfulness {len(helpfulness)} {helpful_avg:.2f}",
        f"helpfulness {helpful_avg:.2f} avg score",
    ]
    tool_texts = [
        f"{len(calls)} Total Tool Calls",
        f"{sum(d for _, d, _ in calls) / len(calls):.2f}ms Avg Latency",
        f"{100 * (len(calls) - failed) / len(calls):.2f}% Success Rate",
        f"{failed} Failed Calls",
    ]
    for tool in ("search_orders", "get_weather"):
        mine = tool_calls(traces, tool)
        ok = sum(not f for _, _, f in mine)
        tool_texts.append(
            f"{tool} {len(mine)} {100 * ok / len(mine):.2f}% "
            f"{sum(d for _, d, _ in mine) / len(mine):.2f}ms"
        )
        tool_texts.append(f"{tool} {100 * (len(mine) - ok) / len(mine):.2f}% overall error rate")
    return {"usage": usage, "quality": quality, "tool-calls": tool_texts}


# How many distinct trace-metrics requests each sub-tab sends (../shared/mlflow_ui_requests.md:
# U1-U11, Q1-Q2, T1-T6; Q3 only when the window has no feedback).
OVERVIEW_REQUESTS = {"usage": 11, "quality": 2, "tool-calls": 6}
# The charts each sub-tab draws on this data. Usage: traces, latency, errors, token usage, tokens
# per trace, cost breakdown, cost over time. Quality: one distribution per feedback name and the
# numeric one's moving average. Tool calls: usage, latency, and one error-rate chart per tool.
OVERVIEW_CHARTS = {"usage": 7, "quality": 3, "tool-calls": 4}
# MLflow's UI asks who is logged in; a server without its auth app answers 404 (MLflow's route).
EXPECTED_FAILED_RESPONSES = {"/ajax-api/2.0/mlflow/users/current": 404}


def iso_utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def test_mlflow_ui_overview_charts_come_from_the_service_in_headless_chromium(
    stack: Stack, tmp_path: Path
) -> None:
    """MLflow's own UI (3.17.2's build, served by `mlflow server`) through nginx: each sub-tab
    of the experiment's Overview shows the logged numbers, every traces/metrics call it made was
    answered by the service with what MLflow itself answers, and the page shows no error."""
    from tests.mlflow_ui import chromium, open_page

    assert CHROMIUM is not None
    expected = expected_overview(stack)
    window = f"startTimeLabel=CUSTOM&startTime={iso_utc(WINDOW_START)}"
    window += f"&endTime={iso_utc(WINDOW_END)}"
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    with chromium(CHROMIUM) as browser:
        for tab, texts in expected.items():
            url = f"{stack.nginx_url}/#/experiments/{stack.experiment_id}/overview/{tab}?{window}"
            visit = open_page(
                browser, url, expected_texts=texts, screenshot=tmp_path / f"overview-{tab}.png"
            )
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shutil.copy(visit.screenshot, ARTIFACTS / visit.screenshot.name)
            missing = [t for t in texts if t not in visit.text]
            assert not missing, f"{tab}: not on the page: {missing}\n{visit.text}"
            assert "Failed to load chart data" not in visit.text, tab
            assert visit.charts == OVERVIEW_CHARTS[tab], (tab, visit.charts)
            assert not visit.page_errors, (tab, visit.page_errors)
            failed = {urlsplit(url).path: status for url, status in visit.failed_responses}
            assert failed.items() <= EXPECTED_FAILED_RESPONSES.items(), (tab, failed)
            assert len(visit.console_errors) <= len(visit.failed_responses), visit.console_errors

            bodies = {json.dumps(c.request, sort_keys=True) for c in visit.metrics_calls}
            assert len(bodies) == OVERVIEW_REQUESTS[tab], (tab, sorted(bodies))
            for call in visit.metrics_calls:
                assert call.request["experiment_ids"] == [stack.experiment_id]
                assert call.status == 200, (tab, call)
                assert_answered_by_the_service(stack, call.path, 200, call.headers)
                oracle = mlflow_answer(stack, call.path, call.request)
                assert_same_trace_metrics(call.answer, oracle)


def test_mlflow_trace_metrics_fall_back_to_mlflow_while_the_service_is_stopped(
    stack: Stack,
) -> None:
    """The last test of the module: it stops the service, and starts it again at the end."""
    body = trace_count_request(stack)
    path = f"/ajax-api{TRACE_METRICS}"
    mlflow_log = stack.work_dir / "mlflow.log"
    with local_http() as http:
        served = http.post(f"{stack.nginx_url}{path}", json=body)
        assert served.status_code == 200, served.text
        assert_answered_by_the_service(stack, path, 200, served.headers)
        stack.processes.stop("insights")
        try:
            before = mlflow_log.read_text(errors="replace").count(f'"POST {path} HTTP')
            fallback = http.post(f"{stack.nginx_url}{path}", json=body)
            assert fallback.status_code == 200, fallback.text
            assert "x-request-id" not in fallback.headers
            assert "x-insights-answered-by" not in fallback.headers
            # MLflow answered it (its own access log), with the body the service gave.
            time.sleep(0.5)
            after = mlflow_log.read_text(errors="replace").count(f'"POST {path} HTTP')
            assert after == before + 1
            assert_same_trace_metrics(fallback.json(), served.json())
            # Same for the correlation route, under the other prefix.
            correlation = http.post(
                f"{stack.nginx_url}/api{FILTER_CORRELATION}", json=correlation_request(stack)
            )
            assert correlation.status_code == 200, correlation.text
            assert "x-request-id" not in correlation.headers
        finally:
            stack.processes.restart("insights")
            stack.processes.wait_http("insights", f"{stack.insights_url}/ready", timeout=90)
    wait_until_the_store_answers_as_live(stack.insights_url, stack.experiment_id)
