"""Writing MLflow filter strings: clauses a user can paste into MLflow's ``search_traces``.

MLflow's syntax has no escapes, so some values and keys cannot be written; each writer answers
None for those rather than a string that would select something else.
"""

from __future__ import annotations

from typing import Final

from mlflow.tracing.constant import TraceTagKey

from service.filters.keys import KEY_ALIASES, REROUTED_KEYS
from service.traces import TRACE_NAME_TAG

# MLflow reads these keys (compared lower-cased) as something else under tags. and feedback.:
# `name` is the trace name, `timestamp` the trace timestamp, and so on.
_REWRITTEN_KEYS: Final = frozenset({"name", *KEY_ALIASES, *REROUTED_KEYS})
# Tags MLflow does not look up in the tags table.
_SPECIAL_TAGS: Final = frozenset({TRACE_NAME_TAG, TraceTagKey.LINKED_PROMPTS})


def quote(value: str) -> str | None:
    """A string literal for a filter: MLflow's syntax has no escapes, so a value holding both
    quote characters cannot be written (None)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    return None


def backticked(key: str, *, tag: bool) -> str | None:
    """The key in backticks, for after ``tags.`` (``tag``) or ``feedback.``; None when MLflow
    would read it as something else."""
    if "`" in key or key.lower() in _REWRITTEN_KEYS or (tag and key in _SPECIAL_TAGS):
        return None
    return f"`{key}`"


def span_filter(
    *, type_: str | None = None, name: str | None = None, status: str | None = None
) -> str | None:
    """``span.type = ... AND span.name = ...``: one span with every given column."""
    clauses = []
    for key, value in (("type", type_), ("name", name), ("status", status)):
        if value is not None:
            quoted = quote(value)
            if quoted is None:
                return None
            clauses.append(f"span.{key} = {quoted}")
    return " AND ".join(clauses)
