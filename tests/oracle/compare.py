"""Comparing answers: JSON equal to 1e-9 relative, and the same JSON from every database."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tests.oracle.stats import close

if TYPE_CHECKING:
    from tests.conftest import InsightsClient


def assert_close_json(actual: Any, expected: Any, path: str = "$") -> None:
    """Equal JSON, floats to 1e-9 relative (``close``), key sets and order of lists."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), (path, actual)
        assert set(actual) == set(expected), (path, sorted(actual), sorted(expected))
        for key, value in expected.items():
            assert_close_json(actual[key], value, f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), (path, actual, expected)
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_close_json(a, e, f"{path}[{i}]")
    elif isinstance(expected, float) and not isinstance(expected, bool):
        assert isinstance(actual, int | float), (path, actual)
        assert close(float(actual), expected), (path, actual, expected)
    else:
        assert actual == expected and type(actual) is type(expected), (path, actual, expected)


async def same_json_everywhere(
    clients: dict[str, InsightsClient], endpoint: str, body_for: Callable[[str], dict[str, Any]]
) -> dict[str, Any]:
    """Call every backend; assert the JSON is identical to the last digit; return it."""
    answers = {name: await c.ok(endpoint, body_for(name)) for name, c in clients.items()}
    first_name, first = next(iter(answers.items()))
    for name, answer in answers.items():
        assert answer == first, f"{endpoint}: {name} differs from {first_name}"
    return first
