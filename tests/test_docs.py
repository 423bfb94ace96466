"""The documentation stands on its own: every link in a Markdown file resolves inside the
repository (to a tracked file, and to a heading when it names one), and no tracked file points
at a path outside the repository."""

import re
import subprocess
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
EXTERNAL = ("http://", "https://", "mailto:")
# A relative path that climbs, such as `../README.md` in deploy/k8s.
CLIMBING = re.compile(r"(?<![\w.])((?:\.\./)+[\w][\w./-]*)")


@cache
def tracked() -> frozenset[str]:
    listing = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return frozenset(listing.splitlines())


def markdown_files() -> list[str]:
    return sorted(name for name in tracked() if name.endswith(".md"))


def outside_code(text: str) -> str:
    """The text without its fenced code blocks and inline code (no links or headings there)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    headings = re.findall(r"^#{1,6} (.+)$", outside_code(path.read_text()), re.MULTILINE)
    return {slug(heading) for heading in headings}


def is_tracked(relative: str) -> bool:
    return relative in tracked() or any(name.startswith(f"{relative}/") for name in tracked())


@pytest.mark.parametrize("name", markdown_files())
def test_every_link_resolves_inside_the_repository(name: str) -> None:
    source = ROOT / name
    links = LINK.findall(outside_code(source.read_text()))
    broken = []
    for link in links:
        if link.startswith(EXTERNAL):
            continue
        target, _, anchor = link.partition("#")
        path = (source.parent / target).resolve() if target else source
        if not path.is_relative_to(ROOT) or not is_tracked(str(path.relative_to(ROOT))):
            broken.append(f"{link}: no such file in the repository")
        elif anchor and anchor not in anchors(path):
            broken.append(f"{link}: no heading #{anchor} in {path.relative_to(ROOT)}")
    assert not broken, f"{name}: " + "; ".join(broken)


def test_the_readme_links_to_the_manual() -> None:
    """The front page leads to each part of docs/ and shows the screenshot."""
    links = set(LINK.findall((ROOT / "README.md").read_text()))
    for page in ("using", "architecture", "contracts", "api", "deploy", "performance"):
        assert f"docs/{page}.md" in links, page
    assert "docs/screenshot-desktop.png" in links


def test_no_file_points_outside_the_repository() -> None:
    """A path that climbs (`../…`) from a tracked file stays inside the repository. Tests are
    left out: their hostile paths (`../../etc/passwd`) are inputs, not pointers."""
    escaping = []
    for name in sorted(name for name in tracked() if not name.startswith("tests/")):
        path = ROOT / name
        try:
            text = path.read_text()
        except (UnicodeDecodeError, IsADirectoryError, FileNotFoundError):
            continue  # binary files; submodule entries
        for relative in CLIMBING.findall(text):
            if not (path.parent / relative).resolve().is_relative_to(ROOT):
                escaping.append(f"{name}: {relative}")
    assert not escaping
