"""A cheap "has anything been written since?" question, per database.

A cycle asks it first; when the answer is "no", the cycle skips the fingerprints of the recent
slots and the feedback cursor (the reconciliation slice still runs). The answer may arrive late
(PostgreSQL publishes its table counters up to about a second after a commit, MariaDB stamps
tables to the second) but never misses a write: a write made after the token was read changes
a later token. ``delay_ms`` is that lateness; a cycle that skips on it claims freshness only up
to ``now - delay_ms``.
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession

from service.store.layout import TRACE_TABLES


class ChangeGate(Protocol):
    delay_ms: int

    async def token(self, session: AsyncSession) -> str | None:
        """A value that changes when a copied table is written; ``None``: cannot tell."""
        ...


_NAMES = tuple(t.name for t in TRACE_TABLES)


class PostgresGate:
    """``pg_stat_user_tables`` counts inserted, updated and deleted rows per table."""

    # Backends publish counters when idle, at most once a second, after ten at the latest.
    delay_ms = 10_000

    async def token(self, session: AsyncSession) -> str | None:
        rows = await session.execute(
            text(
                "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables "
                "WHERE relname IN :names AND schemaname = current_schema() ORDER BY relname"
            ).bindparams(bindparam("names", expanding=True)),
            {"names": list(_NAMES)},
        )
        return repr([tuple(r) for r in rows.all()])


class MariaDBGate:
    """InnoDB's ``UPDATE_TIME`` per table: set at commit, to the second, NULL after a restart
    until the next write."""

    delay_ms = 1_000
    # A stamp this close to the server's clock may be followed by more writes in the same second.
    _SETTLING_SECONDS = 2

    async def token(self, session: AsyncSession) -> str | None:
        rows = (
            await session.execute(
                text(
                    "SELECT TABLE_NAME, UPDATE_TIME, "
                    "UPDATE_TIME >= NOW() - INTERVAL :settle SECOND AS settling "
                    "FROM information_schema.TABLES "
                    "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN :names "
                    "ORDER BY TABLE_NAME"
                ).bindparams(bindparam("names", expanding=True)),
                {"names": list(_NAMES), "settle": self._SETTLING_SECONDS},
            )
        ).all()
        if any(settling for _, _, settling in rows):
            return None
        return repr([(name, str(stamp)) for name, stamp, _ in rows])


class NoGate:
    """SQLite: a local file with no cross-connection change counter; always look."""

    delay_ms = 0

    async def token(self, session: AsyncSession) -> str | None:
        return None


def gate_for(dialect_name: str) -> ChangeGate:
    gates: dict[str, ChangeGate] = {"postgresql": PostgresGate(), "mysql": MariaDBGate()}
    return gates.get(dialect_name, NoGate())
