"""The README's layout section names every module of service/, so a newcomer finds each one."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def layout_section() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("The layout follows the data flow")
    return readme[start : readme.index("```", readme.index("```", start) + 3)]


def test_every_service_module_is_named_in_the_readme_layout() -> None:
    layout = layout_section()
    unnamed = [
        path.relative_to(ROOT).as_posix()
        for path in sorted((ROOT / "service").rglob("*.py"))
        if path.name not in ("__init__.py", "__main__.py")
        # An area module (models/, queries/, api/) is named by its area, e.g. "tags".
        and path.name not in layout
        and path.stem not in layout
    ]
    assert not unnamed, f"add these modules to the README's layout section: {unnamed}"
