"""Read-only database assets: supported MLflow schema revisions and read-only role SQL.

Nothing here changes a schema. See README.md in this folder.
"""

import re
from importlib.resources import files

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_SCRIPTS = {"postgres": "postgres_readonly_role.sql", "mysql": "mysql_readonly_user.sql"}


def supported_revisions() -> dict[str, str]:
    """Alembic revision -> the MLflow release(s) whose trace tables the service was built for."""
    text = files(__package__).joinpath("supported_revisions.txt").read_text(encoding="utf-8")
    revisions: dict[str, str] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            revision, _, releases = line.partition(" ")
            revisions[revision] = releases.strip()
    return revisions


def render_readonly_role_sql(dialect: str, *, role: str, password: str, database: str) -> str:
    """The read-only role script for ``dialect`` ("postgres" or "mysql"), filled in.

    Names must be plain identifiers; the password may hold anything but a backslash or NUL.
    """
    for label, name in (("role", role), ("database", database)):
        if not _IDENTIFIER.match(name):
            raise ValueError(f"{label} must be a plain identifier (letters, digits, _): {name!r}")
    if "\\" in password or "\0" in password:
        raise ValueError("the password may not contain a backslash or NUL")
    template = files(__package__).joinpath(_SCRIPTS[dialect]).read_text(encoding="utf-8")
    return template.format(role=role, password=password.replace("'", "''"), database=database)
