"""The repository stands alone: docs/architecture.md names every package and top-level module of radtrace,
and no document the README leads to points outside the repository (issue 15: the README sent a newcomer to
../shared/DESIGN.md, which a clone does not have)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).parents[2]
PACKAGE = ROOT / "src" / "radtrace"
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_the_architecture_names_every_package_and_module() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    parts = [p.name + "/" for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()]
    parts += [p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    missing = [part for part in parts if f"`{part}`" not in text]
    assert missing == [], f"docs/architecture.md does not describe {missing}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_no_document_points_outside_the_repository(document: Path) -> None:
    text = document.read_text(encoding="utf-8")
    for target in re.findall(r"(?:`|\]\(|\s)((?:\.\./)+[^`)\s]*)", text):
        resolved = (document.parent / target).resolve()
        assert resolved.is_relative_to(ROOT), f"{document.name} points outside the repository: {target}"
        assert resolved.exists(), f"{document.name} names {target}, which does not exist"
