"""MLflow ``search_traces`` filter strings -> SQLAlchemy predicates on the trace row (API.md §6).

A filter is parsed once per request, by a small tokenizer (``lexer``) and a clause-by-clause
parser (``parser``), into ``Clause``s (a key resolved through ``keys`` to what it refers to, a
comparator, a value): the one parsed form, which callers may read. Each clause becomes one
predicate on ``SqlTraceInfo`` (``predicates``; tag, metadata, span and assessment clauses as
correlated ``EXISTS``, never joins, so no trace row is repeated). Values are bound parameters.

The predicates select exactly what MLflow's own ``SqlAlchemyStore.search_traces`` returns for the
same filter on the same database, including where MLflow's behaviour is surprising:

* String comparisons (``=``, ``!=``, ``LIKE``, ``IN``) are case-sensitive on every database,
  ``ILIKE`` is ``lower(x) LIKE lower(y)`` (ASCII-only folding on SQLite). MLflow gets there with
  a byte-wise comparison on MySQL/MariaDB and ``PRAGMA case_sensitive_like`` on SQLite; we use
  the same byte-wise comparison and, on SQLite, ``GLOB`` (see ``service.dialects.case_sensitive``).
* ``tags.k != 'v'`` (and ``LIKE``) only matches traces that carry the tag; ``IS NULL`` is the
  way to ask for traces without it. The same holds for metadata, spans and assessments.
* ``IS NULL``/``IS NOT NULL`` on tags and metadata match the key with the database's collation
  (case-insensitive on MySQL), while value comparisons match it byte-wise.
* ``<prefix>.name`` (any case, for tags/metadata/feedback/expectation) means the trace name, and
  ``<prefix>.timestamp``/``execution_time`` mean the key ``timestamp_ms``/``execution_time_ms``.
* Metadata that MLflow 3.17 promotes to ``trace_info`` columns (session id, token usage, cost)
  is compared on those columns; ``metadata.mlflow.sourceRun = 'x'`` also matches traces linked
  to the run.
* Assessments count only when ``valid``; ``=``/``!=`` compare the stored JSON text with the value
  and with its JSON encoding, ``<``/``>`` the numeric aggregate of numeric values only. An
  assessment logged for a whole session (``mlflow.trace.session`` in its metadata) counts for
  every trace of that session.

``render`` writes filter strings (the other direction), for users to paste into MLflow.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.sql import ColumnElement

from service.filters.keys import Comparator
from service.filters.lexer import MAX_FILTER_LENGTH
from service.filters.parser import MAX_FILTER_SUBQUERIES, Clause, parse
from service.filters.predicates import predicates

__all__ = [
    "MAX_FILTER_LENGTH",
    "MAX_FILTER_SUBQUERIES",
    "Clause",
    "Comparator",
    "parse",
    "parse_filter_string",
    "predicates",
]


def parse_filter_string(
    filter_string: str | None, *, experiment_ids: Sequence[int | str] | None = None
) -> list[ColumnElement[bool]]:
    """``predicates(parse(filter_string))``: straight from text, for callers that need no
    clauses. Raises ``InsightsError`` (INVALID_PARAMETER_VALUE) naming what is wrong."""
    return predicates(parse(filter_string), experiment_ids=experiment_ids)
