"""The contract's typing of feedback values, decided from the stored JSON with ``json.loads``."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable
from typing import Any

from tests.oracle.stats import rate


def value_type(value_text: str) -> str | None:
    """The contract's type of one stored JSON value; None for JSON null."""
    value = json.loads(value_text)
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "boolean" if value.lower() in ("yes", "no") else "string"
    if isinstance(value, int | float):
        try:
            return "numeric" if math.isfinite(float(value)) else "string"
        except OverflowError:
            return "string"
    return "string"


def is_failure(value_text: str) -> bool:
    value = json.loads(value_text)
    return value is False or (isinstance(value, str) and value.lower() == "no")


def display(value_text: str) -> str:
    value = json.loads(value_text)
    return value if isinstance(value, str) else value_text


def name_type(values: Iterable[str]) -> str:
    kinds = {kind for v in values if (kind := value_type(v)) is not None}
    return kinds.pop() if len(kinds) == 1 else "string"


def top_values(counter: Counter[str], total: int, limit: int) -> list[dict[str, Any]]:
    ranked = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
    return [{"value": v, "count": n, "percentage": rate(n, total) or 0.0} for v, n in ranked]
