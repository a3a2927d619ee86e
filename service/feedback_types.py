"""What a feedback value is (API.md §4.2): the one definition every endpoint uses.

Rows: valid feedback (``assessment_type = 'feedback'``, ``valid = true``). A row whose ``error``
is set is a *judge failure*; a row *has a value* (counts in value statistics) when it is no judge
failure and its value is not JSON ``null``.

A value's type comes from its stored JSON: ``true``/``false``, and the strings ``"yes"``/``"no"``
in any case (exactly those letters: ``" yes"`` is a string), are *boolean*, ``true``/``"yes"`` a
pass and ``false``/``"no"`` a failure; finite numbers are *numeric*, recognised by MLflow's own
``is_numeric_value`` column (the one ``feedback.<name> > x`` filters use, so NaN, infinities and
numbers too large for a double are strings); any other JSON is a *string*. A name's type is the
type of all its values in the listed experiments (whatever the window and filter, so a name
keeps its meaning when a UI moves the window); if they disagree, or when it has no value at all
(only judge failures), it is *string*.

How a requested name is matched with the stored names is each caller's explicit choice
(``NameMatch``): byte-wise for ``assessments/*``, with the database's collation (as MLflow's
filters) for the dimensions and correlations. The two differ only on MySQL/MariaDB.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any

from mlflow.store.tracking.dbmodels.models import SqlAssessments
from sqlalchemy import and_, case, false, func, literal, null, or_, select, true, union_all
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.sql import ColumnElement, Select
from sqlalchemy.sql.selectable import Subquery

from service.dialects import exact_text, text_equals
from service.dialects.expressions import FEEDBACK_KINDS_SUMMARY, kept_distinct
from service.models.assessments import AssessmentType
from service.scope import TraceScope

FEEDBACK = "feedback"
JSON_NULL = "null"


class ValueKind(StrEnum):
    JSON_BOOL = "json_bool"  # true / false
    YES_NO = "yes_no"  # "yes" / "no", lower case
    YES_NO_CASED = "yes_no_cased"  # "Yes", "NO", ...
    NUMBER = "number"
    STRING = "string"  # any other JSON
    NONE = "none"  # no value that decides a type: a judge failure, JSON null, an invalid row


BOOLEAN_KINDS = frozenset({ValueKind.JSON_BOOL, ValueKind.YES_NO, ValueKind.YES_NO_CASED})


Assessments = Any  # SqlAssessments or an alias of it


class NameMatch(Enum):
    """How feedback names given in a request (or grouped) compare with the stored names."""

    EXACT = "exact"
    """Code point by code point on every database (``Quality`` and ``quality`` are two names,
    as tag keys and tool names are): the ``assessments/*`` endpoints."""
    COLLATION = "collation"
    """With the database's collation, as MLflow's ``feedback.<name>`` filters compare: the
    dimensions and correlations, whose filter strings select what MLflow selects. Differs
    from EXACT only on MySQL/MariaDB, for names that differ only in case (or trailing spaces):
    there they are one name, which comes back in one of its stored spellings."""

    def key(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        """The column to group names by."""
        return exact_text(column) if self is NameMatch.EXACT else column

    def equals(self, column: ColumnElement[Any], name: str) -> ColumnElement[bool]:
        return text_equals(column, name) if self is NameMatch.EXACT else column == name

    def one_of(self, column: ColumnElement[Any], names: Sequence[str]) -> ColumnElement[bool]:
        if not names:
            return false()
        if self is NameMatch.EXACT:
            # The plain IN keeps MLflow's (experiment, name) index usable.
            return and_(column.in_(names), exact_text(column).in_(names))
        return column.in_(names)


# -- rows ------------------------------------------------------------------------------------


def is_feedback(a: Assessments = SqlAssessments) -> list[ColumnElement[bool]]:
    """Valid feedback rows: the only assessments that count (API.md §4.2)."""
    return [a.assessment_type == FEEDBACK, a.valid == true()]


def is_judge_failure(a: Assessments = SqlAssessments) -> ColumnElement[bool]:
    """A judge failure: ``error`` is set, whatever the value (``error_count`` only)."""
    return a.error.is_not(None)


def has_value(a: Assessments = SqlAssessments) -> ColumnElement[bool]:
    """A row MLflow's value filters can match (its value is not JSON null), judge failure or
    not: what the dimensions and correlations select, as MLflow's filters do."""
    condition: ColumnElement[bool] = a.value != JSON_NULL
    return condition


def counts_as_value(a: Assessments = SqlAssessments) -> ColumnElement[bool]:
    """A row that *has a value* in §4.2's sense (``total_count``, value statistics): no judge
    failure, and a value that is not JSON null."""
    return and_(a.error.is_(None), has_value(a))


def decides_type(a: Assessments = SqlAssessments) -> ColumnElement[bool]:
    """A valid row with a value, no judge failure: the rows a name's type is decided from."""
    return and_(a.valid == true(), counts_as_value(a))


# -- values ----------------------------------------------------------------------------------


def is_numeric(a: Assessments = SqlAssessments) -> ColumnElement[bool]:
    """A numeric value: a finite number (MLflow's ``is_numeric_value``; its double is
    ``aggregate_value``)."""
    return a.is_numeric_value == true()


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
        (is_numeric(a), ValueKind.NUMBER.value),
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


# -- the type of each name -------------------------------------------------------------------


def kind_rows(a: Assessments = SqlAssessments) -> Select[Any]:
    """``SELECT trace_id, experiment_id, name, kind`` of every feedback row: what a name's type
    is decided from. The analytics store keeps its distinct rows (``feedback_kind_rows``)."""
    return select(
        a.trace_id.label("trace_id"),
        a.experiment_id.label("experiment_id"),
        a.name.label("name"),
        value_kind(a).label("kind"),
    ).where(a.assessment_type == FEEDBACK)


def feedback_kind_rows() -> Subquery:
    """``kind_rows`` as a FROM clause of which statements read distinct rows only: the
    tracking databases read the feedback rows, the store its summary of them (a few rows per
    name, kept by its sync) instead of every feedback row of the experiments on each request.
    Its ``trace_id`` may only be tested with ``scope.whole_experiments().owns``: the store's
    summary knows each row's trace by the copy of its experiment, not by id."""
    return kept_distinct.of(
        kind_rows(aliased(SqlAssessments)), name="feedback_kinds", summary=FEEDBACK_KINDS_SUMMARY
    )


def _kinds_by_name(
    k: Subquery, names: Iterable[str] | None, match: NameMatch, *columns: Any
) -> Select[Any]:
    """``SELECT name, kind, columns`` over ``feedback_kind_rows`` (of ``names``), one row per
    name and kind; the caller adds the experiments."""
    name = match.key(k.c.name).label("name")
    stmt = select(name, k.c.kind, *columns).select_from(k).group_by(name, k.c.kind)
    if names is not None:
        stmt = stmt.where(match.one_of(k.c.name, list(names)))
    return stmt


async def feedback_types(
    session: AsyncSession,
    experiment_ids: Sequence[int],
    names: Iterable[str] | None = None,
    *,
    match: NameMatch,
) -> dict[str, AssessmentType]:
    """The type of every feedback name of the experiments (or only of ``names``).

    A name is there when it has any feedback row (valid or not) in the experiments. One round
    trip, on the assessment rows alone (MLflow's index on experiment and name).
    """
    k = feedback_kind_rows()
    stmt = _kinds_by_name(k, names, match).where(k.c.experiment_id.in_(experiment_ids))
    kinds: dict[str, set[ValueKind]] = {}
    for row in await session.execute(stmt):
        kinds.setdefault(str(row.name), set()).add(ValueKind(row.kind))
    return {name: type_of(found) for name, found in kinds.items()}


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
    session: AsyncSession,
    scope: TraceScope,
    names: Iterable[str] | None = None,
    *,
    match: NameMatch,
) -> dict[str, FeedbackTyping]:
    """Every feedback name of the listed experiments (or only ``names``), with its type, its
    value kinds and whether it has a value in scope.

    A name is there when it has any feedback row (valid or not) in the listed experiments. One
    round trip.
    """
    # Two parts of one statement: the kinds of every feedback row of the experiments' traces
    # (whatever the window), and the names with a counted row of a trace in scope. Apart, the
    # store answers the first from its summary of kinds and the second from the assessment rows
    # alone (their copies of their trace's experiment and timestamp), where one outer join of
    # every row to the traces in scope cost 3x more.
    # The scope's filter may test assessments itself: the traces in scope are a subquery, so
    # its EXISTS clauses never correlate with the assessment rows read here.
    k, b = feedback_kind_rows(), aliased(SqlAssessments)
    kinds_stmt = _kinds_by_name(k, names, match, literal(0).label("in_scope")).where(
        scope.whole_experiments().owns(k.c.trace_id)
    )
    counted = select(
        match.key(b.name).label("name"),
        null().label("kind"),
        literal(1).label("in_scope"),
    ).where(
        b.assessment_type == FEEDBACK,
        b.valid == true(),
        has_value(b),
        scope.owns(b.trace_id),
    )
    if names is not None:
        counted = counted.where(match.one_of(b.name, list(names)))
    stmt = union_all(kinds_stmt, counted.group_by(match.key(b.name)))
    kinds: dict[str, set[ValueKind]] = {}
    has_scope: dict[str, bool] = {}
    for row in await session.execute(stmt):
        key = str(row.name)
        found = kinds.setdefault(key, set())
        if row.kind is not None:
            found.add(ValueKind(row.kind))
        has_scope[key] = has_scope.get(key, False) or bool(row.in_scope)
    return {name: FeedbackTyping(name, frozenset(kinds[name]), has_scope[name]) for name in kinds}
