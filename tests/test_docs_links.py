"""The README guides and its links hold: at most 250 lines, a table of contents that lists each of its sections, and
every relative Markdown link in README.md, docs/*.md, tests/README.md and benchmarks/README.md names a file that
exists and, with a #anchor, a heading in that file (GitHub's slugs). Well under a second, no marker.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import REPO

README_MAX_LINES = 250
DOCS = [
    REPO / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
    REPO / "tests/README.md",
    REPO / "benchmarks/README.md",
]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def unfenced(text: str) -> str:
    """The text outside fenced code blocks: where a heading is one."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def prose(text: str) -> str:
    """The text outside fenced code blocks and inline code: where a link is one."""
    return re.sub(r"`[^`\n]*`", "", unfenced(text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: links kept as their text, lowercase, punctuation but - and _ dropped, spaces
    to -."""
    heading = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", heading).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor, a repeated one with GitHub's -1, -2 ... suffix."""
    text = unfenced(path.read_text())
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", text, re.M):
        base = slug(heading)
        found.add(f"{base}-{seen[base]}" if base in seen else base)
        seen[base] = seen.get(base, 0) + 1
    return found


def links(path: Path) -> list[str]:
    return [t for t in LINK.findall(prose(path.read_text())) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def test_slugs_follow_githubs_rules():
    assert (
        slug("Hosts: which are supported, and how each was checked")
        == "hosts-which-are-supported-and-how-each-was-checked"
    )
    assert slug("Tasks (`invoke`, defaults in `invoke.yaml`)") == "tasks-invoke-defaults-in-invokeyaml"
    assert slug("Open in VS Code (devcontainer)") == "open-in-vs-code-devcontainer"


def test_the_readme_is_at_most_250_lines():
    lines = len((REPO / "README.md").read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move reference text to docs/"


def test_the_readme_has_a_table_of_contents_listing_each_section():
    text = (REPO / "README.md").read_text()
    toc = re.search(r"^## Contents\n(.*?)^## ", text, re.S | re.M)
    assert toc, "README.md has no '## Contents' section"
    listed = {t.removeprefix("#") for t in LINK.findall(toc.group(1)) if t.startswith("#")}
    sections = {slug(h) for h in re.findall(r"^## +(.+)$", unfenced(text), re.M)} - {"contents"}
    assert sections - listed == set(), "sections the table of contents does not list"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(doc):
    assert doc.exists(), doc
    broken = []
    for target in links(doc):
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and (path.is_dir() or path.suffix != ".md" or anchor not in anchors(path)):
            broken.append(f"{target}: no heading #{anchor} in {path.relative_to(REPO)}")
    assert broken == [], f"{doc.relative_to(REPO)}: {broken}"
