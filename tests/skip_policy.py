"""In CI (``CI=true``) a skipped test is a test that did not run, so skips are policed.

Every skip is printed with its reason and counted at the end of the run; a skip that
``tests/skips_allowed.toml`` does not list fails the run (exit status 1), naming the test and
the entry that would list it. ``INSIGHTS_TEST_BACKENDS`` may not leave a database out of a CI
run: the run refuses to start instead. Outside CI the plugin does nothing.

Registered from ``tests/conftest.py`` with ``pytest_plugins``.
"""

from __future__ import annotations

import fnmatch
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ALL_BACKENDS, ALL_PATHS

ALLOW_LIST = Path(__file__).with_name("skips_allowed.toml")
RELATIVE_ALLOW_LIST = f"tests/{ALLOW_LIST.name}"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


@dataclass(frozen=True)
class AllowedSkip:
    """An allow-list entry: the test id ``test`` (or ids matching it as an fnmatch pattern)
    may skip, for ``reason``."""

    test: str
    reason: str

    def matches(self, nodeid: str) -> bool:
        # An exact id first: a parametrized id's brackets would read as a pattern's [set].
        return nodeid == self.test or fnmatch.fnmatchcase(nodeid, self.test)


@dataclass(frozen=True)
class Skip:
    nodeid: str
    message: str  # the reason the test gave
    where: str  # file:line of the skip call
    allowed: AllowedSkip | None


def load_allow_list(path: Path = ALLOW_LIST) -> list[AllowedSkip]:
    entries = tomllib.loads(path.read_text()).get("skip", [])
    allowed = []
    for number, entry in enumerate(entries, start=1):
        test, reason = entry.get("test", ""), entry.get("reason", "")
        if set(entry) != {"test", "reason"} or not test.strip() or not reason.strip():
            raise pytest.UsageError(
                f"{RELATIVE_ALLOW_LIST}: [[skip]] entry {number} needs exactly a non-empty "
                f"'test' (test id pattern) and 'reason'; got {entry}"
            )
        allowed.append(AllowedSkip(test, reason))
    return allowed


def check_backends_not_shrunk() -> None:
    """CI runs every database: an inherited INSIGHTS_TEST_BACKENDS must not shrink it."""
    wanted = os.environ.get("INSIGHTS_TEST_BACKENDS")
    if wanted is None:
        return
    names = {name.strip() for name in wanted.split(",") if name.strip()}
    if names != set(ALL_BACKENDS):
        left_out = ", ".join(sorted(set(ALL_BACKENDS) - names)) or "none"
        raise pytest.UsageError(
            f"CI=true but INSIGHTS_TEST_BACKENDS={wanted!r} (left out: {left_out}). A CI run "
            f"covers {', '.join(ALL_BACKENDS)}: unset INSIGHTS_TEST_BACKENDS (.ci/run does)."
        )


def check_paths_not_shrunk() -> None:
    """CI runs the suite on both answering paths: INSIGHTS_TEST_PATHS must not shrink it."""
    wanted = os.environ.get("INSIGHTS_TEST_PATHS")
    if wanted is None:
        return
    names = {name.strip() for name in wanted.split(",") if name.strip()}
    if names != set(ALL_PATHS):
        raise pytest.UsageError(
            f"CI=true but INSIGHTS_TEST_PATHS={wanted!r}. A CI run covers "
            f"{', '.join(ALL_PATHS)}: unset INSIGHTS_TEST_PATHS (.ci/run does)."
        )


def skip_location_and_message(
    report: pytest.TestReport | pytest.CollectReport, root: Path
) -> tuple[str, str]:
    """Where the skip was called (as ``-rs`` prints it) and the reason it gave."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        path, line, message = longrepr
        where = os.path.relpath(path, root) if os.path.isabs(path) else path
        return f"{where}:{line}", str(message).removeprefix("Skipped: ")
    return "?", str(longrepr)


def listing_hint(nodeid: str) -> str:
    return f'[[skip]]\ntest = "{nodeid}"\nreason = "<why skipping it in CI is right>"'


class SkipPolicy:
    def __init__(self, allowed: list[AllowedSkip], root: Path) -> None:
        self.allowed = allowed
        self.root = root
        self.skips: list[Skip] = []

    def record(self, report: pytest.TestReport | pytest.CollectReport) -> None:
        where, message = skip_location_and_message(report, self.root)
        entry = next((a for a in self.allowed if a.matches(report.nodeid)), None)
        self.skips.append(Skip(report.nodeid, message, where, entry))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # An expected failure also reports "skipped"; it ran, so it is not a skip.
        if report.skipped and not hasattr(report, "wasxfail"):
            self.record(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.skipped:  # a whole module skipped at import
            self.record(report)

    @property
    def unlisted(self) -> list[Skip]:
        return [s for s in self.skips if s.allowed is None]

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.unlisted and session.exitstatus in (
            pytest.ExitCode.OK,
            pytest.ExitCode.NO_TESTS_COLLECTED,
        ):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        tr = terminalreporter
        tr.section("CI skip policy")
        listed = len(self.skips) - len(self.unlisted)
        tr.write_line(
            f"{len(self.skips)} skipped: {listed} on the allow-list ({RELATIVE_ALLOW_LIST}), "
            f"{len(self.unlisted)} not"
        )
        for skip in self.skips:
            status = "allowed " if skip.allowed else "UNLISTED"
            tr.write_line(f"{status} {skip.nodeid} ({skip.where}): {skip.message}")
            if skip.allowed:
                tr.write_line(f"         listed because: {skip.allowed.reason}")
        if not self.unlisted:
            return
        tr.write_line("")
        tr.write_line(
            f"FAILED: {len(self.unlisted)} test(s) skipped in CI without being on the allow-list; "
            "a skipped test did not run. Make it run here, or, if skipping it in CI is right, "
            f"list it in {RELATIVE_ALLOW_LIST} with the reason:",
            red=True,
            bold=True,
        )
        for skip in self.unlisted:
            tr.write_line(listing_hint(skip.nodeid))


def pytest_configure(config: pytest.Config) -> None:
    if not in_ci():
        return
    check_backends_not_shrunk()
    check_paths_not_shrunk()
    config.pluginmanager.register(
        SkipPolicy(load_allow_list(), config.rootpath), "insights-ci-skip-policy"
    )
