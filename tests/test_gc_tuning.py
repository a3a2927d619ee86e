"""The collector is tuned once per process: startup objects frozen, later garbage collected."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

from service.app import create_app
from service.gc_tuning import YOUNG_THRESHOLD
from service.settings import Settings


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


async def _start_and_stop(tmp_path: Path) -> None:
    # No database there: the app serves anyway (``/ready`` says 503), and starts up fully.
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'absent.db'}", store="off"))
    async with app.router.lifespan_context(app):
        pass


async def test_startup_freezes_once_and_later_cycles_are_still_collected(tmp_path: Path) -> None:
    await _start_and_stop(tmp_path)
    frozen = gc.get_freeze_count()
    assert frozen > 10_000  # at least the imports' objects
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD

    # A second app in the same process (as in the tests) freezes nothing more (frozen objects
    # freed by reference counting leave the count) ...
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    await _start_and_stop(tmp_path)
    assert gc.get_freeze_count() <= frozen

    # ... so a cycle that became garbage after the first startup is collected, not kept.
    alive = weakref.ref(a)
    del a, b
    gc.collect()
    assert alive() is None
