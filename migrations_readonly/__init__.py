"""Read-only database assets: supported MLflow schema revisions and read-only role SQL.

Nothing here changes a schema. See README.md in this folder.
"""

from importlib.resources import files


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
