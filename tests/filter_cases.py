"""Filter strings for tests/test_filters.py: every key x comparator of API.md §6, plus edge cases.

Placeholders in angle brackets (``<mid>``, ``<run_id>``, ...) are replaced per database with
values read from the test data; see ``test_filters.placeholders``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Case:
    """A filter whose result must equal MLflow's ``search_traces`` for the same filter.

    ``trivial`` marks filters allowed to select nothing or everything (on some database):
    case-folding and escape rules that differ per database, or semantics that match nothing.
    None may select everything on every database at once: counted through HTTP, it would then
    pass even if the endpoint ignored the filter (``test_endpoint_counts_what_mlflow_selects``).
    """

    filter: str
    trivial: bool = False


@dataclass(frozen=True)
class ComposedCase:
    """A filter MLflow itself rejects (``name IN``), checked against MLflow filters it accepts:
    the union (``any``) or intersection (``all``) of their results."""

    filter: str
    parts: tuple[str, ...]
    combine: Literal["any", "all"]


EQUIVALENT: tuple[Case, ...] = (
    # -- status ----------------------------------------------------------------------------
    Case("status = 'OK'"),
    Case('status = "ERROR"'),
    Case("status != 'OK'"),
    Case("trace.status = 'IN_PROGRESS'"),
    Case("attributes.status != 'ERROR'"),
    Case("attribute.status = 'ERROR'"),
    Case("status IN ('OK', 'IN_PROGRESS')"),
    Case("status IN ('ERROR')"),
    Case("trace.status NOT IN ('OK')"),
    Case("status NOT IN ('OK', 'ERROR')"),
    Case("status LIKE 'E%'"),
    Case("status LIKE '%R%'"),
    Case("status like '_K'"),
    Case("status LIKE 'ok'", trivial=True),  # LIKE is case-sensitive, even on SQLite
    Case("status ILIKE 'ok'"),
    Case("attributes.status ILIKE '%progress'"),
    Case("status = 'ok'", trivial=True),
    Case("status LIKE 'IN\\_%'", trivial=True),  # backslash escapes on PostgreSQL/MySQL only
    Case("status LIKE '[OE]%'", trivial=True),  # brackets are not LIKE syntax (nor GLOB's here)
    Case("tags.customer_id LIKE '*'", trivial=True),
    # -- trace name --------------------------------------------------------------------------
    Case("name = 'chat'"),
    Case("trace.name = 'Chat'"),
    Case("name != 'chat'"),
    Case("name LIKE 'sum%'"),
    Case("name LIKE '_hat'"),
    Case("name LIKE 'CHAT'", trivial=True),
    Case("name LIKE 'C%'"),
    Case("trace.name ILIKE 'CHAT'"),
    Case("name ILIKE '%q%'"),
    # MLflow reads <prefix>.name, and tags.mlflow.traceName, as the trace name.
    Case("tags.name = 'triage'"),
    Case("tags.NAME != 'chat'"),
    Case("metadata.name LIKE 's%'"),
    Case("feedback.name = 'chat'"),
    Case("tags.mlflow.traceName = 'summarize'"),
    Case("tag.`mlflow.traceName` ILIKE 'S%'"),
    Case("tags.mlflow.traceName IS NOT NULL"),  # one edge trace has had its name removed
    Case("tags.mlflow.traceName IS NULL"),
    # -- timestamps and latency ----------------------------------------------------------------
    Case("timestamp_ms > <mid>"),
    Case("timestamp_ms >= <second>"),  # the second-earliest trace is at <second> exactly
    Case("timestamp_ms > <first>"),
    Case("trace.timestamp_ms < <mid>"),
    Case("timestamp_ms <= <mid>"),
    Case("timestamp_ms = <first>"),
    Case("timestamp_ms != <first>"),
    Case("trace.timestamp > <mid>"),
    Case("timestamp < <mid>"),
    Case("timestamp_ms > <mid>.5"),
    Case("timestamp_ms <= 1.7e12", trivial=True),
    Case("execution_time_ms > 1000"),
    Case("execution_time_ms <= 500"),
    Case("trace.execution_time_ms = <duration>"),
    Case("execution_time_ms != <duration>"),
    Case("execution_time >= 2000"),
    Case("trace.execution_time < 700"),
    Case("timestamp_ms >= <first> AND timestamp_ms < <mid> AND execution_time_ms > 0"),
    # -- tags ------------------------------------------------------------------------------------
    Case("tags.persona = 'admin'"),
    Case("tag.persona != 'admin'"),
    Case("tags.persona LIKE 'cust%'"),
    Case("tags.persona LIKE 'ADMIN'"),
    Case("tags.persona ILIKE 'ADMIN'"),
    Case("tags.persona ILIKE 'admin%'"),
    Case("tags.persona IS NULL"),
    Case("tags.persona IS NOT NULL"),
    Case("tags.PERSONA = 'admin'"),
    Case("tags.PERSONA IS NOT NULL", trivial=True),  # the key matches case-insensitively on MySQL
    Case("tags.`persona` = 'guest'"),
    Case('tags.`team%_name` = "o\'brien"'),
    Case("tags.`team%_name` = 'the \"A\" team'"),
    Case("tags.`team%_name` = 'zürich'"),
    Case("tags.`team%_name` ILIKE 'ZÜRICH'", trivial=True),  # SQLite lower() is ASCII-only
    Case("tags.`team%_name` LIKE '100%%'"),
    Case("tags.`team%_name` LIKE '%_%'"),
    Case("tags.`team%_name` LIKE '%\\_%'", trivial=True),
    Case("tags.`team%_name` != 'platform_ops'"),
    Case("tags.`team%_name` IS NULL"),
    Case("tags.`team%_name` IS NOT NULL"),
    Case("tags.customer_id LIKE 'cust-00_'"),
    Case("tags.customer_id = 'cust-001'"),
    Case("tags.env = 'prod' AND tags.persona != 'guest'"),
    Case("tags.env = 'staging' and tags.persona IS NULL", trivial=True),
    Case("tags.timestamp = 'x'", trivial=True),  # MLflow looks up the tag `timestamp_ms`
    Case("tags.nosuchtag != 'x'", trivial=True),
    # -- metadata --------------------------------------------------------------------------------
    Case("metadata.app_version = '1.5.0'"),
    Case("metadata.app_version != '1.5.0'"),
    Case("metadata.app_version LIKE '1.4%'"),
    Case("request_metadata.app_version ILIKE '1.5%'"),
    Case("metadata.app_version IS NULL"),
    Case("metadata.app_version IS NOT NULL"),
    Case("metadata.`mlflow.user` = 'trace-insights-demo'"),
    Case("metadata.mlflow.trace.session LIKE 'sess-000%'"),
    Case("metadata.mlflow.trace.session = 'edge-session'"),
    Case("metadata.`mlflow.trace.session` != 'edge-session'"),
    Case("metadata.mlflow.trace.session ILIKE 'EDGE%'"),
    Case("metadata.mlflow.trace.session IS NULL"),
    Case("metadata.mlflow.trace.session IS NOT NULL"),
    Case("metadata.mlflow.trace.tokenUsage IS NOT NULL"),
    Case("metadata.mlflow.trace.tokenUsage IS NULL"),
    Case("metadata.mlflow.trace.tokenUsage = '<token_usage>'"),
    Case("metadata.mlflow.trace.tokenUsage != '<token_usage>'"),
    Case("metadata.mlflow.trace.tokenUsage = '{\"input_tokens\": 1.0}'", trivial=True),
    Case("metadata.mlflow.trace.cost IS NOT NULL"),
    Case("metadata.mlflow.trace.cost = '<cost>'"),
    Case("metadata.mlflow.trace.cost != '<cost>'"),
    Case("metadata.mlflow.sourceRun = '<run_id>'"),
    Case("metadata.mlflow.sourceRun != '<run_id>'", trivial=True),
    Case("metadata.mlflow.sourceRun IS NOT NULL"),
    # -- spans: all span clauses of a filter hold on one span ---------------------------------
    Case("span.name = 'search_orders'"),
    Case("span.name != 'search_orders'"),
    Case("span.type = 'TOOL'"),
    Case("span.type != 'AGENT'"),
    Case("span.type IN ('RETRIEVER', 'LLM')"),
    Case("span.type NOT IN ('TOOL', 'LLM', 'AGENT', 'CHAIN')"),
    Case("span.status = 'ERROR'"),
    Case("span.status != 'OK'"),
    Case("span.status IN ('ERROR')"),
    Case("span.name LIKE 'send%'"),
    Case("span.name LIKE 'Search%'"),
    Case("span.name ILIKE 'SEND%'"),
    Case("span.name IN ('run_sql', 'fetch_docs')"),
    Case("span.name NOT IN ('run_sql')"),
    Case("span.name = 'search_orders' AND span.status = 'ERROR'"),
    Case("span.type = 'TOOL' AND span.status = 'ERROR' AND status = 'OK'"),
    Case("span.name = 'send_email' and span.type = 'LLM'", trivial=True),
    Case("span.type = 'LLM' AND timestamp_ms > <mid>"),
    Case("span.name LIKE 'get_%' AND span.status != 'ERROR' AND span.type = 'TOOL'"),
    # -- feedback and expectations -------------------------------------------------------------
    Case("feedback.correctness = 'true'"),
    Case("feedback.correctness = 'false'"),
    Case("feedback.correctness != 'true'"),
    Case("feedback.correctness IS NULL"),
    Case("feedback.correctness IS NOT NULL"),
    Case("feedback.Correctness IS NOT NULL", trivial=True),  # names match case-blind on MySQL
    Case("feedback.relevance = 'yes'"),
    Case('feedback.relevance = "Yes"'),
    Case("feedback.relevance != 'yes'"),
    Case("feedback.relevance = 'no' AND feedback.correctness = 'false'"),
    Case("feedback.quality_score > 3"),
    Case("feedback.quality_score >= 4.5"),
    Case("feedback.quality_score < 2"),
    Case("feedback.quality_score <= 3.5"),
    Case("feedback.quality_score > -1"),
    Case("feedback.quality_score = '4'"),
    Case("feedback.quality_score = '3.5'"),
    Case("feedback.quality_score = '5'"),
    Case("feedback.quality_score != '4'"),
    Case("feedback.quality_score IS NULL"),
    Case("feedback.correctness > 0", trivial=True),  # booleans are not numeric values
    Case("feedback.tone = 'friendly'"),
    Case("feedback.tone = 'Friendly'"),
    Case("feedback.tone IS NOT NULL"),
    Case("feedback.session_quality IS NOT NULL"),
    Case("feedback.session_quality IS NULL"),
    Case("feedback.session_quality = 'good'"),
    Case("feedback.session_score >= 0.5"),
    Case("expectation.expected_answer IS NOT NULL"),
    Case("expectation.expected_answer IS NULL"),
    Case("expectation.expected_answer = 'billing'"),
    Case("expectation.expected_answer != 'billing'"),
    # -- combinations ----------------------------------------------------------------------------
    Case("status = 'OK' AND tags.persona = 'customer' AND feedback.correctness = 'false'"),
    Case("status = 'ERROR' and span.type = 'TOOL' and tags.env != 'staging'"),
    Case("tags.env = 'prod' AND metadata.app_version = '1.5.0' AND execution_time_ms > 1000"),
    Case("feedback.quality_score >= 4 AND feedback.relevance = 'yes' AND name = 'chat'"),
    Case("status = 'OK' AnD name = 'chat'"),
    Case("  name = 'chat'\n\tAND   span.name = 'search_orders'  "),
)

COMPOSED: tuple[ComposedCase, ...] = (
    ComposedCase("name IN ('chat', 'triage')", ("name = 'chat'", "name = 'triage'"), "any"),
    ComposedCase("trace.name IN ('Chat')", ("name = 'Chat'",), "any"),
    ComposedCase(
        "name NOT IN ('chat', 'sql_query')", ("name != 'chat'", "name != 'sql_query'"), "all"
    ),
    ComposedCase(
        "name IN ('chat', 'summarize') AND status = 'ERROR'",
        ("name = 'chat' AND status = 'ERROR'", "name = 'summarize' AND status = 'ERROR'"),
        "any",
    ),
)

# (filter, words the message must contain so the user knows what to change)
ERRORS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("status = 'OK' OR status = 'ERROR'", ("OR", "AND")),
    ("status = 'OK' or name = 'chat'", ("OR",)),
    ("(status = 'OK')", ("Parentheses",)),
    ("status = 'OK' AND (name = 'chat')", ("Parentheses",)),
    ("status = 'OK')", ("Parentheses",)),
    ("foo.bar = 'x'", ("Unknown key 'foo.bar'",)),
    ("foo = 'x'", ("Unknown key 'foo'",)),
    ("STATUS = 'OK'", ("Unknown key 'STATUS'", "case-sensitive")),
    ("trace.request_id = 'tr-1'", ("not supported", "trace.request_id")),
    ("run_id = 'abc'", ("not supported", "run_id")),
    ("tags.run_id = 'abc'", ("tags.run_id", "source run")),
    ("span.attributes.model = 'x'", ("span.attributes.model", "span.name")),
    ("span.content LIKE '%x%'", ("span.content",)),
    ("issue.id = 'x'", ("issue",)),
    ("timestamp_ms LIKE '1%'", ("'LIKE'", "timestamp_ms", "=, !=, <, <=, >, >=")),
    ("execution_time_ms IN (1, 2)", ("'IN'", "execution_time_ms")),
    ("timestamp_ms IS NULL", ("'IS NULL'", "timestamp_ms")),
    ("status > 'OK'", ("'>'", "status")),
    ("status IS NULL", ("'IS NULL'", "status")),
    ("name IS NULL", ("'IS NULL'", "name")),
    ("tags.persona IN ('a')", ("'IN'", "tags.persona")),
    ("tags.persona < 'b'", ("'<'", "tags.persona")),
    ("metadata.app_version NOT IN ('1')", ("'NOT IN'", "metadata.app_version")),
    ("span.name IS NULL", ("'IS NULL'", "span.name")),
    ("span.type > 'A'", ("'>'", "span.type")),
    ("feedback.correctness LIKE 't%'", ("'LIKE'", "feedback.correctness")),
    ("feedback.correctness IN ('true')", ("'IN'", "feedback.correctness")),
    ("feedback.name > 3", ("'>'", "feedback.name", "trace name")),
    ("metadata.mlflow.trace.tokenUsage LIKE '%'", ("'LIKE'", "tokenUsage")),
    ("status RLIKE 'O.*'", ("'RLIKE'", "status")),
    ("status NOT LIKE 'O%'", ("NOT", "status")),
    ("status <> 'OK'", ("'<>'", "status")),
    ("status == 'OK'", ("'=='", "status")),
    ("status 'OK'", ("comparator", "status")),
    ("status =", ("no value",)),
    ("status", ("no comparator",)),
    ("status = OK", ("quoted", "'OK'")),
    ("status = 5", ("quoted",)),
    ("timestamp_ms > 'yesterday'", ("bare number",)),
    ("timestamp_ms > 99999999999999999999999", ("out of range",)),
    ("timestamp_ms > 1e999", ("out of range",)),
    ("feedback.quality_score > '3'", ("bare number",)),
    ("feedback.quality_score = 4", ("quoted",)),
    ("feedback.correctness = true", ("quoted",)),
    ("status = 'OK", ("Unterminated string",)),
    ('status = "OK', ("Unterminated string",)),
    ("tags.`team%_name = 'x'", ("Unbalanced backtick",)),
    ("tags.team` = 'x'", ("backtick",)),
    ("tags.`a`.b = 'x'", ("backticks",)),
    ("tags.`` = 'x'", ("empty name",)),
    ("tags.my-key = 'x'", ("'-'", "backticks")),
    ("status IN ()", ("Empty IN list",)),
    ("status NOT IN ()", ("Empty NOT IN list",)),
    ("status IN 'OK'", ("parenthesised list",)),
    ("status IN ('OK' 'ERROR')", ("Malformed IN list",)),
    ("status IN ('OK',)", ("quoted",)),
    ("status IN ('OK'", ("Unclosed IN list",)),
    ("status IN ('OK', 5)", ("quoted",)),
    ("status IS 'OK'", ("NULL or NOT NULL",)),
    ("tags.x IS NOT 'a'", ("NULL or NOT NULL",)),
    ("status = 'OK' AND", ("ends after AND",)),
    ("AND status = 'OK'", ("Expected a key", "'AND'")),
    ("status = 'OK' AND AND name = 'chat'", ("Expected a key",)),
    ("status = 'OK' name = 'chat'", ("Expected AND",)),
    ("status = 'OK'; DROP TABLE trace_info", ("Unexpected character ';'",)),
    ("status = 'OK' -- comment", ("Unexpected character '-'",)),
    ("1 = 1", ("Expected a key", "'1'")),
    ("status = 1.2.3", ("Malformed number",)),
    ("' OR 1=1 --", ("Unterminated string",)),
    ("status = 'OK' UNION SELECT request_id FROM trace_info", ("Expected AND", "'UNION'")),
    ("!!!", ("Unexpected character '!'",)),
    ("@@@ garbage $$$", ("Unexpected character '@'",)),
    ("ståtus = 'OK'", ("Unexpected character 'å'",)),
    ("status = 'OK' AND name = 'ok\x00'", ("NUL",)),
    ("status = '\ud800'", ("Unicode",)),
    ("x" * 100_000, ("100000 characters", "limit")),
    ("status = 'OK' AND " * 6_000 + "status = 'OK'", ("characters", "limit")),
)
