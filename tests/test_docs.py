"""README.md is a landing page (<= 10 kB), no relative link in it or docs/ is broken, and
docs/performance.md opens with a table whose every row names its date and commit."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "docs" / "history").glob("*.md")),
]
LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def test_readme_is_a_landing_page():
    size = (ROOT / "README.md").stat().st_size
    assert size <= 10_000, f"README.md is {size} bytes; move detail into docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_existing_files(page):
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL, or an anchor in the same page
        path = target.split("#", 1)[0]
        if not (page.parent / path).exists():
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)} links to missing files: {broken}"


def test_performance_table_rows_carry_a_date_and_a_commit():
    """The first table of docs/performance.md is the current-figures table: each row must
    say when (YYYY-MM-DD) and at which commit (7+ hex digits in backticks) it was measured."""
    lines = (ROOT / "docs" / "performance.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append(line)
    rows = table[2:]  # after the header and its separator
    assert rows, "docs/performance.md: the first table has no rows"
    missing = [
        r[:60]
        for r in rows
        if not re.search(r"\b\d{4}-\d{2}-\d{2}\b", r) or not re.search(r"`[0-9a-f]{7,40}`", r)
    ]
    assert not missing, f"docs/performance.md's first table: rows without date or commit: {missing}"
