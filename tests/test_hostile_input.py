"""Hostile input, on every backend: the service answers 4xx in MLflow's error shape, never 5xx,
and never writes to the tracking DB.

Huge, negative and mistyped timestamps; thousands of experiment ids; filter strings built to
break a parser or a SQL string (quotes, backticks, comments, ``'; DROP TABLE``, LIKE wildcards,
emoji, right-to-left text, NUL bytes, 100 KB, thousands of clauses); names containing LIKE
wildcards, quotes and backslashes (which must match only themselves: LIKE input is never built
from them); very long strings and wrong JSON types in every field of every endpoint; deeply
nested JSON; wrong methods, unknown paths and bodies over 1 MiB. A checksum of every
table's rows (every column) is compared before and after.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from service.app import create_app
from service.http.body import MAX_BODY_BYTES
from service.models.common import MAX_EPOCH_MS
from service.settings import Settings
from tests import oracle
from tests.conftest import AJAX_API, API, Backend, InsightsClient
from tests.oracle import Raw, Trace, load_raw

VOLUME = "traffic-cost/volume"
TEAM_TAG = "team%_name"  # a tag key of the test data with LIKE wildcards in it
OPENAPI = create_app(Settings(database_url="sqlite:///unused.db")).openapi()


def _scoped(path: str) -> bool:
    """The endpoint takes a scope (experiment_ids, window, filter); the experiment listing does
    not and has its own tests (tests/test_experiments.py)."""
    ref = OPENAPI["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    schema = OPENAPI["components"]["schemas"][ref["$ref"].rsplit("/", 1)[1]]
    return "experiment_ids" in schema["properties"]


ENDPOINTS = sorted(
    path.removeprefix(f"{API}/")
    for path in OPENAPI["paths"]
    if path.startswith(f"{API}/") and _scoped(path)
)
# What each endpoint needs besides experiment_ids to answer 200 on the test data.
REQUIRED: dict[str, dict[str, Any]] = {
    "assessments/metrics": {"assessment_name": "correctness"},
    "tags/metrics": {"tag_key": "persona"},
    "dimensions/calculate-npmi": {
        "dimension1": {"name": "status", "parameters": {"value": "ERROR"}},
        "dimension2": {"name": "span.type", "parameters": {"value": "TOOL"}},
    },
    "correlations": {"filter_string": "status = 'ERROR'"},
}


def request_fields(endpoint: str) -> dict[str, dict[str, Any]]:
    """The top-level fields of an endpoint's request body, with their JSON schemas."""
    body = OPENAPI["paths"][f"{API}/{endpoint}"]["post"]["requestBody"]
    ref = body["content"]["application/json"]["schema"]["$ref"]
    schema = OPENAPI["components"]["schemas"][ref.rsplit("/", 1)[1]]
    properties: dict[str, dict[str, Any]] = schema["properties"]
    return properties


def json_types(schema: dict[str, Any]) -> set[str]:
    """The JSON types a field's schema allows (a $ref is an object)."""
    if "$ref" in schema:
        return {"object"}
    if "anyOf" in schema:
        return set().union(*(json_types(s) for s in schema["anyOf"]))
    if "enum" in schema or "const" in schema:
        return {"string"}
    return {schema.get("type", "object")}


def body_for(endpoint: str, backend: Backend, **fields: Any) -> dict[str, Any]:
    return {"experiment_ids": [backend.experiment_id()], **REQUIRED.get(endpoint, {}), **fields}


async def post(client: InsightsClient, endpoint: str, body: Any) -> httpx.Response:
    """POST a body as JSON text; json.dumps (ASCII) can carry NUL bytes and lone surrogates."""
    return await client.http.post(f"{API}/{endpoint}", content=json.dumps(body).encode())


def assert_mlflow_error(
    response: httpx.Response, status: int | tuple[int, ...], *mentions: str
) -> dict[str, Any]:
    """An error in MLflow's shape with the expected status, its message naming ``mentions``."""
    statuses = (status,) if isinstance(status, int) else status
    assert response.status_code in statuses, (response.status_code, response.text[:2000])
    payload = response.json()
    assert isinstance(payload, dict), payload
    assert set(payload) <= {"error_code", "message", "details"}, payload
    assert isinstance(payload["error_code"], str) and payload["error_code"].isupper(), payload
    message = payload["message"]
    assert isinstance(message, str) and len(message) >= 15, payload
    assert isinstance(payload.get("details", {}), dict), payload
    for word in mentions:
        assert word.lower() in message.lower(), (word, message[:2000])
    return payload


def assert_not_a_server_error(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:2000])
    if response.status_code >= 400:
        assert_mlflow_error(response, response.status_code)


@pytest.fixture(scope="module")
def checksums_before(raw: sa.Connection) -> dict[str, str]:
    return oracle.table_checksums(raw)


# Every test of the module takes the checksums first, so the last test compares with them.
pytestmark = pytest.mark.usefixtures("checksums_before")


def tag_rows(raw: sa.Connection, backend: Backend) -> list[tuple[str, str]]:
    """(key, value) of the tags of the default experiment's traces, from the raw rows."""
    rows = raw.execute(
        sa.text(
            "SELECT g.key, g.value FROM trace_tags g JOIN trace_info t "
            "ON t.request_id = g.request_id WHERE t.experiment_id = :experiment"
        ),
        {"experiment": int(backend.experiment_id())},
    ).all()
    return [(str(key), str(value)) for key, value in rows]


def traces_with_tag(raw: sa.Connection, backend: Backend, key: str, value: str | None) -> int:
    """Traces carrying the tag (with that value). Compared in Python, by code points: MySQL's
    collations would ignore case and trailing spaces in SQL."""
    return sum(1 for k, v in tag_rows(raw, backend) if k == key and value in (None, v))


async def volume_count(client: InsightsClient, backend: Backend, filter_string: str) -> int:
    response = await post(
        client, "traffic-cost/volume", body_for(VOLUME, backend, filter_string=filter_string)
    )
    assert response.status_code == 200, response.text[:2000]
    count: int = response.json()["summary"]["count"]
    return count


# -- the bodies used are right --------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_the_baseline_body_is_accepted(
    client: InsightsClient, backend: Backend, endpoint: str
) -> None:
    response = await post(client, endpoint, body_for(endpoint, backend))
    assert response.status_code == 200, response.text[:2000]


# -- timestamps -----------------------------------------------------------------------------

BAD_TIMESTAMPS: list[Any] = [
    -1,
    -(2**63),
    2**63,
    2**64,
    10**30,
    MAX_EPOCH_MS + 1,
    1.5,
    1e308,
    -0.5,
    "1700000000000",
    "",
    "yesterday",
    True,
    [],
    [1700000000000],
    {},
    {"ms": 1700000000000},
]
RAW_BAD_NUMBERS = [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"0x10", b"01", b"1_000"]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_hostile_timestamps_are_400(
    client: InsightsClient, backend: Backend, endpoint: str
) -> None:
    for field in ("start_time", "end_time"):
        for value in BAD_TIMESTAMPS:
            response = await post(client, endpoint, body_for(endpoint, backend, **{field: value}))
            assert_mlflow_error(response, 400, field)
        for number in RAW_BAD_NUMBERS:
            text = json.dumps(body_for(endpoint, backend))[:-1] + f', "{field}": '
            response = await client.http.post(
                f"{API}/{endpoint}", content=text.encode() + number + b"}"
            )
            assert_mlflow_error(response, 400)
    # The widest window there is: fine for summaries, too many buckets for series.
    response = await post(
        client, endpoint, body_for(endpoint, backend, start_time=0, end_time=MAX_EPOCH_MS)
    )
    if response.status_code != 200:
        assert_mlflow_error(response, 400, "buckets")
    response = await post(client, endpoint, body_for(endpoint, backend, start_time=5, end_time=5))
    assert_mlflow_error(response, 400, "start_time", "end_time")


# -- experiment ids -------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_hostile_experiment_ids(
    client: InsightsClient, backend: Backend, endpoint: str
) -> None:
    for count in (10_000, 1_001):
        ids = [str(i) for i in range(count)]
        response = await post(client, endpoint, body_for(endpoint, backend, experiment_ids=ids))
        assert_mlflow_error(response, 400, "experiment_ids", "1000")
    # 1,000 ids is allowed; the ones that do not exist are named.
    ids = [backend.experiment_id(), *(str(900_000 + i) for i in range(999))]
    response = await post(client, endpoint, body_for(endpoint, backend, experiment_ids=ids))
    payload = assert_mlflow_error(response, 404, "900000", "900998")
    assert payload["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    assert len(payload["details"]["experiment_ids"]) == 999
    # Ids beyond the 32-bit id columns cannot exist: 404 on every database.
    huge = ["2147483648", "9223372036854775", "999999999999999999"]
    response = await post(client, endpoint, body_for(endpoint, backend, experiment_ids=huge))
    payload = assert_mlflow_error(response, 404, *huge)
    assert payload["details"]["experiment_ids"] == huge
    for bad in (
        "9" * 19,
        "-1",
        "+1",
        " 1",
        "1 ",
        "1.0",
        "1e3",
        "",
        "\u0663",
        "\uff11",
        "0x1",
        "1; --",
    ):
        response = await post(client, endpoint, body_for(endpoint, backend, experiment_ids=[bad]))
        assert_mlflow_error(response, 400, "experiment_ids")


# -- filter strings -------------------------------------------------------------------------

# Filters that are not MLflow search_traces syntax: 400, naming what is wrong.
BAD_FILTERS: list[tuple[str, str]] = [
    ("'; DROP TABLE trace_info; --", "position 1"),
    ("status = 'OK'; DROP TABLE trace_info; --", "';'"),
    ("status = 'OK' OR 1 = 1", "OR"),
    ("status = 'OK' -- comment", "position"),
    ("status = 'OK' /* comment */", "position"),
    ("tags.persona = 'x' UNION SELECT * FROM experiments", "AND"),
    ("tags.persona = 'admin\\' OR 1=1 --'", "OR"),  # a backslash does not escape a quote
    ("status = 'OK", "Unterminated"),
    ('status = "OK', "Unterminated"),
    ("status = 'OK\"", "Unterminated"),
    ("tags.`persona = 'admin'", "backtick"),
    ("tags.persona` = 'admin'", "backtick"),
    ("tags.`` = 'x'", "empty"),
    ("%", "Unexpected character"),
    ("_ = 'x'", "Unknown key"),
    ("status LIKE 'OK' AND", "ends after AND"),
    ("AND status = 'OK'", "key"),
    ("status = 'OK' AND AND status = 'OK'", "key"),
    ("(status = 'OK')", "Parentheses"),
    ("status IN ()", "Empty"),
    ("span.name NOT LIKE '%'", "NOT LIKE"),
    ("tags.persona LIKE 'adm\\'", "backslash"),
    ("tags.persona ILIKE '%\\\\\\'", "backslash"),
    ("timestamp_ms > 99999999999999999999", "out of range"),
    ("timestamp_ms > 1e400", "out of range"),
    ("timestamp_ms > '1'", "number"),
    ("status = OK", "quoted"),
    ("status = 'OK\x00'", "NUL"),
    ("tags.`ключ` = 'значение' AND \x00", "NUL"),
    ("x" * 100_000, "10000"),
    (" AND ".join(["status = 'OK'"] * 5_000), "10000"),
    # Within the length limit, but that many EXISTS would keep PostgreSQL planning for long.
    (" AND ".join(["tags.persona = 'admin'"] * 51), "limit is 50"),
    (" AND ".join(["feedback.correctness = 'true'"] * 250), "250 tag, metadata and assessment"),
]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_malformed_filter_strings_are_400(
    client: InsightsClient, backend: Backend, endpoint: str
) -> None:
    for filter_string, word in BAD_FILTERS:
        response = await post(
            client, endpoint, body_for(endpoint, backend, filter_string=filter_string)
        )
        assert_mlflow_error(response, 400, word)


# Odd filters that are valid syntax: 200, and they select only what they say.
ODD_FILTERS = [
    "tags.persona = '%'",
    "tags.persona = '_dmin'",
    "tags.persona = '\\'",
    "tags.persona LIKE 'adm\\\\'",
    "tags.`team__name` IS NOT NULL",
    "tags.`%` IS NOT NULL",
    "tags.`_` = 'x'",
    "tags.`persona'; DROP TABLE trace_tags; --` = 'x'",
    'tags.persona = "\'; DELETE FROM trace_info; --"',
    "tags.`😀` = '🔥'",
    "name = 'مرحبا' AND tags.persona = 'שלום'",
    "tags.persona = '\u202enimda'",  # right-to-left override
    "tags.persona = 'admin\u200b'",  # zero-width space
    "span.name = 'search%'",
    "span.name LIKE 'search\\%orders'",
    "feedback.`%` = 'yes'",
    "feedback.quality_score > 1e308",
    "timestamp_ms > 1e308",
    "execution_time_ms < -9223372036854775808",
    "metadata.`mlflow.trace.tokenUsage` = '" + "[" * 2000 + "'",
    "status IN (" + ", ".join(["'x'"] * 1_500) + ")",
    " AND ".join(["status = 'OK'"] * 550),  # clauses on trace columns are cheap
]


def counted(endpoint: str, answer: dict[str, Any]) -> int:
    """The number of things in scope an endpoint's answer reports (traces, rows, spans)."""
    data: Any = answer.get("data")
    match endpoint:
        case "traffic-cost/volume" | "traffic-cost/latency":
            return int(answer["summary"]["count"])
        case "traffic-cost/errors":
            return int(answer["summary"]["total_count"])
        case "traffic-cost/tokens" | "traffic-cost/cost":
            return int(answer["summary"]["trace_count"])
        case "assessments/discovery":
            return sum(row["assessment_count"] for row in data)
        case "assessments/metrics":
            return int(answer["summary"]["total_count"] + answer["summary"]["error_count"])
        case "tools/discovery":
            return sum(row["invocation_count"] for row in data)
        case "tools/metrics":
            return int(data["invocation_count"])
        case "tags/discovery":
            return sum(row["trace_count"] for row in data)
        case "tags/metrics":
            return int(data["trace_count"])
        case "dimensions/discovery":
            [status] = [d for d in data if d["name"] == "status"]
            return len(status["parameters"][0]["enum_values"])
        case "dimensions/calculate-npmi":
            return int(answer["total_count"])
        case "correlations":
            return int(answer["slice_count"])
    raise AssertionError(f"no count for {endpoint}")


def expected_count(
    endpoint: str, raw: Raw, experiment_id: str, keep: Callable[[Trace], bool]
) -> int:
    """``counted`` computed from the raw rows, for the traces of the experiment ``keep`` keeps."""
    traces = raw.in_scope([experiment_id], keep=keep)
    feedback = [
        a for a in raw.assessments if a.trace_id in traces and a.assessment_type == "feedback"
    ]
    tools = [s for s in raw.spans if s.trace_id in traces and s.type == "TOOL"]
    tags = [t for t in raw.tags if t.request_id in traces and not t.key.startswith("mlflow.")]
    match endpoint:
        case "traffic-cost/volume" | "traffic-cost/errors" | "dimensions/calculate-npmi":
            return len(traces)
        case "correlations":
            return len(traces)
        case "traffic-cost/latency":
            return sum(1 for t in traces.values() if t.status in ("OK", "ERROR"))
        case "traffic-cost/tokens":
            return sum(1 for t in traces.values() if t.tokens["total_tokens"] is not None)
        case "traffic-cost/cost":
            return sum(1 for t in traces.values() if t.costs["total_cost"] is not None)
        case "assessments/discovery":
            return sum(1 for a in feedback if a.valid)
        case "assessments/metrics":
            return sum(1 for a in feedback if a.valid and a.name == "correctness")
        case "tools/discovery" | "tools/metrics":
            return len(tools)
        case "tags/discovery":
            return len({(t.request_id, t.key) for t in tags})
        case "tags/metrics":
            return len({t.request_id for t in tags if t.key == "persona"})
        case "dimensions/discovery":
            return len({t.status for t in traces.values()})
    raise AssertionError(f"no expectation for {endpoint}")


def keeps(ok_only: bool) -> Callable[[Trace], bool]:
    return lambda t: ok_only and t.status == "OK"


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_odd_but_valid_filter_strings_select_only_what_they_say(
    client: InsightsClient, backend: Backend, raw: sa.Connection, endpoint: str
) -> None:
    rows = load_raw(raw)
    everything = expected_count(endpoint, rows, backend.experiment_id(), lambda t: True)
    assert everything > 0, "the unfiltered answer must count something for the check to bite"
    for filter_string in ODD_FILTERS:
        response = await post(
            client, endpoint, body_for(endpoint, backend, filter_string=filter_string)
        )
        assert response.status_code == 200, (filter_string[:200], response.text[:2000])
        # Every odd filter above matches nothing, except the 550 times repeated clause.
        ok_only = "AND status" in filter_string
        expected = expected_count(endpoint, rows, backend.experiment_id(), keeps(ok_only))
        assert counted(endpoint, response.json()) == expected, (filter_string[:200], endpoint)
    # Without the odd filter the same count is the whole (correlations: outside its slice).
    answer = (await post(client, endpoint, body_for(endpoint, backend))).json()
    whole = answer["total_count"] if endpoint == "correlations" else counted(endpoint, answer)
    assert whole == everything


async def test_like_wildcards_in_filter_values_and_keys(
    client: InsightsClient, backend: Backend, raw: sa.Connection
) -> None:
    """A key with LIKE wildcards matches only itself; LIKE values are patterns, = values not."""
    admins = traces_with_tag(raw, backend, "persona", "admin")
    obriens = traces_with_tag(raw, backend, TEAM_TAG, "o'brien")
    clubs = traces_with_tag(raw, backend, TEAM_TAG, "100%_club")
    team = traces_with_tag(raw, backend, TEAM_TAG, None)
    assert admins and obriens and clubs and team
    assert await volume_count(client, backend, "tags.persona LIKE '_dmin'") == admins
    assert await volume_count(client, backend, "tags.persona = 'admin'") == admins
    assert await volume_count(client, backend, f'tags.`{TEAM_TAG}` = "o\'brien"') == obriens
    assert await volume_count(client, backend, f"tags.`{TEAM_TAG}` = '100%_club'") == clubs
    assert await volume_count(client, backend, f"tags.`{TEAM_TAG}` IS NOT NULL") == team
    assert await volume_count(client, backend, "tags.`team__name` IS NOT NULL") == 0
    assert await volume_count(client, backend, "tags.`team_name` IS NOT NULL") == 0
    clauses = " AND ".join(["tags.persona = 'admin'"] * 50)  # as many as allowed
    assert await volume_count(client, backend, clauses) == admins


# -- names with LIKE wildcards, quotes and backslashes --------------------------------------

NOT_A_TAG_KEY = [
    "team__name",
    "team_name",
    "%",
    "_",
    "%%",
    "team%",
    "%_name",
    "team_%_name",
    "TEAM%_NAME",
    "team\\%_name",
    "team%\\_name",
    "'",
    '"',
    "\\",
    "persona'--",
    "persona%",
    "person_",
    "persona ",
    " persona",
    "x" * 100_000,
]


async def test_tag_key_with_wildcards_reads_only_that_key(
    client: InsightsClient, backend: Backend, raw: sa.Connection
) -> None:
    response = await post(
        client, "tags/metrics", body_for("tags/metrics", backend, tag_key=TEAM_TAG, limit=1000)
    )
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    expected = Counter(value for key, value in tag_rows(raw, backend) if key == TEAM_TAG)
    assert data["tag_key"] == TEAM_TAG
    assert data["trace_count"] == sum(expected.values())
    assert data["unique_values"] == len(expected)
    assert {v["value"]: v["count"] for v in data["top_values"]} == dict(expected)
    for key in NOT_A_TAG_KEY:
        response = await post(
            client, "tags/metrics", body_for("tags/metrics", backend, tag_key=key)
        )
        payload = assert_mlflow_error(response, 404)
        assert payload["error_code"] == "RESOURCE_DOES_NOT_EXIST", payload
        assert payload["details"]["tag_key"] == key


async def test_tool_and_feedback_names_with_wildcards_are_404(
    client: InsightsClient, backend: Backend
) -> None:
    for name in (
        "%",
        "_",
        "search%",
        "search_order_",
        "%orders",
        "search\\_orders",
        "SEARCH_ORDERS",
        "search_orders ",
        "'",
        "\\",
        "x" * 100_000,
    ):
        response = await post(
            client, "tools/metrics", body_for("tools/metrics", backend, tool_name=name)
        )
        payload = assert_mlflow_error(response, 404)
        assert payload["error_code"] == "RESOURCE_DOES_NOT_EXIST", payload
    for name in (
        "%",
        "_",
        "correct%",
        "c_rrectness",
        "correctness%",
        "'correctness'",
        "Correctness",
        "\\",
        "x" * 100_000,
    ):
        body = body_for("assessments/metrics", backend, assessment_name=name)
        payload = assert_mlflow_error(await post(client, "assessments/metrics", body), 404)
        assert payload["error_code"] == "RESOURCE_DOES_NOT_EXIST", payload
    response = await post(
        client, "tools/metrics", body_for("tools/metrics", backend, tool_name="search_orders")
    )
    assert response.status_code == 200, response.text


async def test_dimension_names_with_wildcards(
    client: InsightsClient, backend: Backend, raw: sa.Connection
) -> None:
    def npmi(dimension: dict[str, Any]) -> dict[str, Any]:
        return body_for("dimensions/calculate-npmi", backend, dimension1=dimension)

    for name, value in [
        ("tools.%", "used"),
        ("tools.search%", "used"),
        ("tags.%", "x"),
        ("tags.team__name", "o'brien"),
        ("tags.team_name", "o'brien"),
        ("assessment.%", "yes"),
        ("assessment.c_rrectness", "yes"),
    ]:
        response = await post(
            client,
            "dimensions/calculate-npmi",
            npmi({"name": name, "parameters": {"value": value}}),
        )
        payload = assert_mlflow_error(response, 404)
        assert payload["error_code"] == "RESOURCE_DOES_NOT_EXIST", payload
    dimension = {"name": f"tags.{TEAM_TAG}", "parameters": {"value": "100%_club"}}
    response = await post(client, "dimensions/calculate-npmi", npmi(dimension))
    assert response.status_code == 200, response.text
    assert response.json()["dimension1"]["count"] == traces_with_tag(
        raw, backend, TEAM_TAG, "100%_club"
    )
    dimension = {"name": "span.name", "parameters": {"value": "search%"}}
    response = await post(client, "dimensions/calculate-npmi", npmi(dimension))
    assert response.status_code == 200, response.text
    assert response.json()["dimension1"]["count"] == 0


# -- every field of every endpoint ----------------------------------------------------------

LONG = "x" * 100_000
# Where a string goes in each field, for fields whose value is not a plain string.
STRING_SLOTS: dict[str, Any] = {
    "experiment_ids": [LONG],
    "correlation_dimensions": [LONG],
    "dimension1": {"name": LONG, "parameters": {"value": LONG}},
    "dimension2": {"name": "status", "parameters": {"value": LONG}},
}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_very_long_strings_in_every_string_field(
    client: InsightsClient, backend: Backend, endpoint: str
) -> None:
    for field, schema in request_fields(endpoint).items():
        if field in STRING_SLOTS:
            value = STRING_SLOTS[field]
        elif "string" in json_types(schema):
            value = LONG
        else:
            continue
        response = await post(client, endpoint, body_for(endpoint, backend, **{field: value}))
        assert_mlflow_error(response, (400, 404))
        # Any string: NUL bytes and lone surrogates are refused before any SQL, naming the field.
        for bad in ("a\x00b", "\ud800", "\udfff\ud800"):
            response = await post(
                client, endpoint, body_for(endpoint, backend, **{field: replace_long(value, bad)})
            )
            assert_mlflow_error(response, 400, field)


def replace_long(value: Any, text: str) -> Any:
    """``value`` with every ``LONG`` string in it replaced by ``text``."""
    if isinstance(value, dict):
        return {key: replace_long(item, text) for key, item in value.items()}
    if isinstance(value, list):
        return [replace_long(item, text) for item in value]
    return text if value == LONG else value


WRONG_VALUES: list[Any] = [
    1,
    -7,
    1.5,
    True,
    False,
    "x",
    "",
    [],
    ["x", 1],
    [[["x"]]],
    {},
    {"nested": {"object": "here"}},
    [{"name": "status"}],
]


def fits(value: Any, types: set[str]) -> bool:
    """Whether a JSON value has one of the types (booleans are not integers here)."""
    if isinstance(value, bool):
        return "boolean" in types
    if isinstance(value, int):
        return "integer" in types or "number" in types
    if isinstance(value, float):
        return "number" in types
    if isinstance(value, str):
        return "string" in types
    if isinstance(value, list):
        return "array" in types
    return "object" in types


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_wrong_json_types_in_every_field_are_400(
    client: InsightsClient, backend: Backend, endpoint: str
) -> None:
    for field, schema in request_fields(endpoint).items():
        types = json_types(schema)
        for value in WRONG_VALUES:
            if fits(value, types):
                continue
            response = await post(client, endpoint, body_for(endpoint, backend, **{field: value}))
            assert_mlflow_error(response, 400, field)
    # An unknown field, and an object where a string is expected inside a list.
    response = await post(client, endpoint, body_for(endpoint, backend, **{"experimentIds": ["1"]}))
    assert_mlflow_error(response, 400, "experimentIds")
    ids = [backend.experiment_id(), {"id": backend.experiment_id()}]
    response = await post(client, endpoint, body_for(endpoint, backend, experiment_ids=ids))
    assert_mlflow_error(response, 400, "experiment_ids")


@pytest.mark.parametrize("endpoint", ["tags/metrics", "assessments/metrics", "correlations"])
async def test_hostile_limits(client: InsightsClient, backend: Backend, endpoint: str) -> None:
    for limit in (0, -1, -(2**63), 1001, 2**63, 10**30):
        response = await post(client, endpoint, body_for(endpoint, backend, limit=limit))
        assert_mlflow_error(response, 400, "limit")
    response = await post(client, endpoint, body_for(endpoint, backend, limit=1000))
    assert response.status_code == 200, response.text


async def test_hostile_min_count(client: InsightsClient, backend: Backend) -> None:
    for min_count in (-1, -(2**63), -(10**30)):
        response = await post(
            client, "correlations", body_for("correlations", backend, min_count=min_count)
        )
        assert_mlflow_error(response, 400, "min_count")
    for min_count in (2**63, 10**30):  # more than any count: nothing qualifies
        response = await post(
            client, "correlations", body_for("correlations", backend, min_count=min_count)
        )
        assert response.status_code == 200, response.text
        assert response.json()["data"] == []


async def test_hostile_timezones_and_buckets(client: InsightsClient, backend: Backend) -> None:
    for timezone in (
        "../../etc/passwd",
        "/usr/share/zoneinfo/UTC",
        "Europe/Berlin ",
        "UTC\x00",
        "",
        "😀",
        "Mars/Olympus_Mons",
        "x" * 100_000,
    ):
        response = await post(
            client, "traffic-cost/volume", body_for(VOLUME, backend, timezone=timezone)
        )
        assert_mlflow_error(response, 400, "timezone")
    for bucket in ("minute", "HOUR", "hour ", "", "day\x00"):
        response = await post(
            client, "traffic-cost/volume", body_for(VOLUME, backend, time_bucket=bucket)
        )
        assert_mlflow_error(response, 400, "time_bucket")


# -- the body itself ------------------------------------------------------------------------


async def test_deeply_nested_json_is_400(client: InsightsClient, backend: Backend) -> None:
    endpoint = "traffic-cost/volume"
    deep_list = b"[" * 10_000 + b"]" * 10_000
    deep_object = b'{"a":' * 10_000 + b"1" + b"}" * 10_000
    prefix = json.dumps(body_for(endpoint, backend))[:-1].encode()
    bodies = [
        deep_list,
        deep_object,
        prefix + b', "filter_string": ' + deep_list + b"}",
        prefix + b', "unknown": ' + deep_object + b"}",
        b'{"experiment_ids": ' + deep_list + b"}",
    ]
    for body in bodies:
        response = await client.http.post(f"{API}/{endpoint}", content=body)
        assert_mlflow_error(response, 400, "JSON")
    # Nested deep, but not too deep to decode: refused by validation.
    for depth in (100, 500, 900):
        nested: Any = "x"
        for _ in range(depth):
            nested = [nested]
        dimension = {"name": "status", "parameters": {"value": nested}}
        npmi = body_for("dimensions/calculate-npmi", backend, dimension1=dimension)
        assert_mlflow_error(await post(client, "dimensions/calculate-npmi", npmi), 400, "value")
        assert_mlflow_error(
            await post(client, endpoint, body_for(endpoint, backend, filter_string=nested)),
            400,
            "filter_string",
        )


async def test_bodies_that_are_not_a_json_object_are_400(client: InsightsClient) -> None:
    for body in (
        b"",
        b"null",
        b"1",
        b'"x"',
        b"[]",
        b"true",
        b"{",
        b"\xff\xfe\x00",
        b"{'a': 1}",
        b"\x00",
    ):
        response = await client.http.post(f"{API}/traffic-cost/volume", content=body)
        assert_mlflow_error(response, 400)


async def test_bodies_over_1_mib_are_400(client: InsightsClient, backend: Backend) -> None:
    endpoint = f"{API}/traffic-cost/volume"
    valid = json.dumps(body_for(VOLUME, backend)).encode()
    # With a Content-Length: refused before reading.
    response = await client.http.post(endpoint, content=b" " * MAX_BODY_BYTES + valid)
    assert_mlflow_error(response, 400, "1 MiB")
    big_filter = json.dumps(body_for(VOLUME, backend, filter_string="x" * (2 * MAX_BODY_BYTES)))
    assert_mlflow_error(await client.http.post(endpoint, content=big_filter.encode()), 400)

    # Chunked, without a Content-Length: refused once the bytes received pass the limit.
    async def chunks() -> Any:
        for _ in range(3):
            yield b" " * (MAX_BODY_BYTES // 2)
        yield valid

    assert_mlflow_error(await client.http.post(endpoint, content=chunks()), 400, "1 MiB")
    # Just under the limit is read as usual.
    response = await client.http.post(
        endpoint, content=b" " * (MAX_BODY_BYTES - len(valid)) + valid
    )
    assert response.status_code == 200, response.text[:2000]


@pytest.mark.parametrize("prefix", [API, AJAX_API])
async def test_wrong_method_and_unknown_paths(client: InsightsClient, prefix: str) -> None:
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        response = await client.http.request(method, f"{prefix}/traffic-cost/volume")
        payload = assert_mlflow_error(response, 405, method, "POST")
        assert payload["error_code"] == "ENDPOINT_NOT_FOUND"
    for path in (
        f"{prefix}/traffic-cost/nothing",
        f"{prefix}/traffic-cost/volume/extra",
        f"{prefix}/../../etc/passwd",
        f"{prefix}/%00",
        f"{prefix}/tags/metrics%27%3B%20DROP%20TABLE%20trace_tags",
        "/api/2.0/mlflow/experiments/search",
        "/nothing-here",
    ):
        response = await client.http.post(path, json={})
        payload = assert_mlflow_error(response, 404)
        assert payload["error_code"] == "ENDPOINT_NOT_FOUND"


# -- and nothing was written ----------------------------------------------------------------


async def test_nothing_was_written(raw: sa.Connection, checksums_before: dict[str, str]) -> None:
    """Every table's rows (every column) are as they were before the module's first request."""
    assert {"trace_info", "spans", "assessments", "trace_tags"} <= set(checksums_before)
    assert oracle.table_checksums(raw) == checksums_before
