"""The type of a feedback name (API.md §4.2), decided from the JSON of its values.

``true``/``false``, and the strings ``"yes"``/``"no"`` in any case, are *boolean*; numbers are
*numeric*; other strings (and any other JSON) are *string*. A name's type is the type of all its
values in the listed experiments (whatever the window and filter, so a name keeps its meaning
when a UI moves the window); if they disagree, or when it has no value at all, it is *string*.
Only valid feedback rows with a value decide: not judge failures (``error`` set; their value is
JSON ``null``). These are the rules of ``service.queries.assessments`` (API.md §4.2 endpoints).

Numbers are recognised by MLflow's own ``is_numeric_value`` column (finite numbers), the one
``feedback.<name> > x`` filters use, so a numeric dimension and its filter agree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from mlflow.store.tracking.dbmodels.models import SqlAssessments, SqlTraceInfo
from sqlalchemy import and_, case, false, func, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.sql import ColumnElement

from service.dialects import text_equals
from service.scope import TraceScope

AssessmentType = Literal["boolean", "numeric", "string"]
FEEDBACK = "feedback"
JSON_NULL = "null"


class ValueKind(StrEnum):
    JSON_BOOL = "json_bool"  # true / false
    YES_NO = "yes_no"  # "yes" / "no", lower case
    YES_NO_CASED = "yes_no_cased"  # "Yes", "NO", ...
    NUMBER = "number"
    STRING = "string"  # any other JSON
    NONE = "none"  # JSON null: the judge failed


BOOLEAN_KINDS = frozenset({ValueKind.JSON_BOOL, ValueKind.YES_NO, ValueKind.YES_NO_CASED})


Assessments = Any  # SqlAssessments or an alias of it


def is_feedback(a: Assessments = SqlAssessments) -> list[ColumnElement[bool]]:
    """Valid feedback rows: the only assessments that count (API.md §4.2)."""
    return [a.assessment_type == FEEDBACK, a.valid == true()]


def has_value(a: Assessments = SqlAssessments) -> ColumnElement[bool]:
    """A row MLflow's value filters can match (its value is not JSON null)."""
    condition: ColumnElement[bool] = a.value != JSON_NULL
    return condition


def decides_type(a: Assessments = SqlAssessments) -> ColumnElement[bool]:
    """A valid row with a value, no judge failure: the rows a name's type is decided from."""
    return and_(a.valid == true(), a.error.is_(None), a.value != JSON_NULL)


def is_true(a: Assessments = SqlAssessments) -> ColumnElement[bool]:
    """A boolean value that passes: ``true`` or ``"yes"`` in any case."""
    return or_(a.value == "true", func.lower(a.value) == '"yes"')


def is_false(a: Assessments = SqlAssessments) -> ColumnElement[bool]:
    """A boolean value that fails: ``false`` or ``"no"`` in any case."""
    return or_(a.value == "false", func.lower(a.value) == '"no"')


def value_kind(a: Assessments = SqlAssessments) -> ColumnElement[Any]:
    """The ``ValueKind`` of a feedback row, in SQL (NONE for rows that do not decide)."""
    value = a.value
    return case(
        (~decides_type(a), ValueKind.NONE.value),
        (value.in_(["true", "false"]), ValueKind.JSON_BOOL.value),
        (
            or_(text_equals(value, '"yes"'), text_equals(value, '"no"')),
            ValueKind.YES_NO.value,
        ),
        (func.lower(value).in_(['"yes"', '"no"']), ValueKind.YES_NO_CASED.value),
        (a.is_numeric_value == true(), ValueKind.NUMBER.value),
        else_=ValueKind.STRING.value,
    )


def type_of(kinds: Iterable[ValueKind]) -> AssessmentType:
    """The type of a name whose values have these kinds (string when they disagree)."""
    valued = set(kinds) - {ValueKind.NONE}
    if valued and valued <= BOOLEAN_KINDS:
        return "boolean"
    if valued == {ValueKind.NUMBER}:
        return "numeric"
    return "string"


@dataclass(frozen=True)
class FeedbackTyping:
    """What the listed experiments hold for one feedback name."""

    name: str
    kinds: frozenset[ValueKind]  # of its rows in the listed experiments, NONE included
    in_scope: bool  # some row with a value belongs to a trace in scope

    @property
    def type(self) -> AssessmentType:
        return type_of(self.kinds)

    @property
    def yes_no(self) -> bool:
        """A boolean name written as "yes"/"no" strings (never as JSON true/false)."""
        return ValueKind.JSON_BOOL not in self.kinds and bool(
            self.kinds & {ValueKind.YES_NO, ValueKind.YES_NO_CASED}
        )


async def feedback_typing(
    session: AsyncSession, scope: TraceScope, names: Iterable[str] | None = None
) -> dict[str, FeedbackTyping]:
    """Every feedback name of the listed experiments (or only ``names``), with its type.

    A name is there when it has any feedback row (valid or not) in the listed experiments. One
    round trip. Names compare as MLflow's filters compare them (with the database's collation),
    so on MySQL/MariaDB names that differ only in case are one name.
    """
    # The scope's filter may test assessments itself: flag the traces in a subquery, so its
    # EXISTS clauses never correlate with the assessment rows read here.
    traces = (
        select(
            SqlTraceInfo.request_id.label("request_id"),
            case((and_(*scope.conditions()), 1), else_=0).label("in_scope"),
        )
        .where(SqlTraceInfo.experiment_id.in_(scope.experiment_ids))
        .subquery("traces")
    )
    a = aliased(SqlAssessments)
    kind = value_kind(a).label("kind")
    conditions: list[ColumnElement[bool]] = [a.assessment_type == FEEDBACK]
    if names is not None:
        wanted = list(names)
        conditions.append(a.name.in_(wanted) if wanted else false())
    in_scope = case((and_(a.valid == true(), has_value(a)), traces.c.in_scope), else_=0)
    stmt = (
        select(a.name.label("name"), kind, func.sum(in_scope).label("in_scope"))
        .select_from(traces)
        .join(a, a.trace_id == traces.c.request_id)
        .where(*conditions)
        .group_by(a.name, kind)
    )
    kinds: dict[str, set[ValueKind]] = {}
    scoped: dict[str, bool] = {}
    for row in await session.execute(stmt):
        key = str(row.name)
        kinds.setdefault(key, set()).add(ValueKind(row.kind))
        scoped[key] = scoped.get(key, False) or bool(row.in_scope)
    return {name: FeedbackTyping(name, frozenset(kinds[name]), scoped[name]) for name in kinds}
