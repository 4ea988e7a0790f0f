"""The docs run: every fenced `python` block in README.md, CONTRIBUTING.md and docs/*.md is executed (a fresh
namespace, the working directory a temporary folder), and every relative link points to a file that exists.

A block that cannot run here (network, GPU, big data, minutes of CPU) is marked by an HTML comment on the line right
before its fence, `<!-- skip-test: REASON -->`, and the reason may not be empty.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tests.helpers.paths import ROOT
from tests.helpers.registries import registrations_undone

PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]

SKIP = re.compile(r"^\s*<!--\s*skip-test:(?P<reason>.*?)-->\s*$")
OPEN_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^\s`]*)")
HEADING = re.compile(r"^ {0,3}#{1,6}\s+(?P<text>.+?)\s*#*\s*$")
LINK = re.compile(r"\]\(\s*<?(?P<target>[^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"(`+)(?:.+?)\1")


@dataclass(frozen=True)
class Block:
    page: Path
    index: int  # among the page's python blocks, from 0
    line: int  # 1-based line of the opening fence
    code: str
    skip: str | None  # the reason of a skip-test comment right before the fence, "" if it gives none


@dataclass(frozen=True)
class Fenced:
    line: int  # 1-based line of the opening fence
    info: str
    body: list[str]


def fenced_blocks(text: str) -> list[Fenced]:
    """The fenced code blocks of a Markdown text (``` or ~~~, the closing fence at least as long as the opening)."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        opening = OPEN_FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        closing = re.compile(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        body, j = [], i + 1
        while j < len(lines) and not closing.match(lines[j]):
            line = lines[j]
            body.append(line[min(indent, len(line) - len(line.lstrip(" "))) :])
            j += 1
        blocks.append(Fenced(i + 1, opening["info"].lower(), body))
        i = j + 1
    return blocks


def python_blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    lines = text.splitlines()
    found = []
    for block in fenced_blocks(text):
        if block.info != "python":
            continue
        before = SKIP.match(lines[block.line - 2]) if block.line >= 2 else None
        # Pad with blank lines so that a traceback's line numbers are the page's own.
        code = "\n" * block.line + "\n".join(block.body) + "\n"
        skip = before["reason"].strip() if before else None
        found.append(Block(page, len(found), block.line, code, skip))
    return found


def without_fences(text: str) -> str:
    """The text with its fenced blocks blanked line for line."""
    lines = text.splitlines()
    for block in fenced_blocks(text):
        for k in range(block.line - 1, min(block.line + len(block.body) + 1, len(lines))):
            lines[k] = ""
    return "\n".join(lines)


def prose(text: str) -> str:
    """The text without its fenced blocks and without inline code spans: where links are."""
    return CODE_SPAN.sub("", without_fences(text))


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    names = set()
    for line in without_fences(page.read_text(encoding="utf-8")).splitlines():
        heading = HEADING.match(line)
        if heading:
            name = slug(heading["text"])
            count = seen.get(name, 0)
            seen[name] = count + 1
            names.add(name if count == 0 else f"{name}-{count}")
    return names


def name(path: Path) -> str:
    """The path relative to the repository, or as it is when it lies outside."""
    try:
        return path.relative_to(ROOT).as_posix()
    except ValueError:
        return path.as_posix()


BLOCKS = [block for page in PAGES for block in python_blocks(page)]


def test_pages_found():
    assert (ROOT / "README.md") in PAGES and len(PAGES) > 3
    assert any(block.page.name == "README.md" for block in BLOCKS), "the README's Python API block is not found"


@pytest.mark.parametrize("block", BLOCKS, ids=[f"{name(b.page)}:{b.index}" for b in BLOCKS])
def test_python_block_runs(block: Block, tmp_path, monkeypatch):
    if block.skip is not None:
        assert block.skip, f"{name(block.page)}:{block.line}: a skip-test comment needs a reason"
        pytest.skip(f"{name(block.page)}:{block.line}: {block.skip}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a block that reaches for the hub fails instead of downloading
    try:
        import huggingface_hub.constants

        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    except ImportError:
        pass
    torch.manual_seed(0)
    namespace = {"__name__": "__main__"}
    with registrations_undone():  # docs/extending.md registers components; the registries stay as cft ships them
        exec(compile(block.code, f"{name(block.page)} (python block {block.index})", "exec"), namespace)


@pytest.mark.parametrize("page", PAGES, ids=[name(p) for p in PAGES])
def test_skip_comments_mark_python_blocks(page: Path):
    """A skip-test comment stands right before a python fence, so it never silently marks nothing."""
    lines = page.read_text(encoding="utf-8").splitlines()
    starts = {block.line for block in fenced_blocks("\n".join(lines)) if block.info == "python"}
    for number, line in enumerate(lines, start=1):
        if SKIP.match(line):
            assert number + 1 in starts, f"{name(page)}:{number}: skip-test comment not right before a python fence"


@pytest.mark.parametrize("page", PAGES, ids=[name(p) for p in PAGES])
def test_relative_links_exist(page: Path):
    broken = []
    for target in LINK.findall(prose(page.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        file = (page.parent / path_part).resolve() if path_part else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading with that anchor in {name(file)}")
    assert not broken, f"{name(page)}: " + "; ".join(broken)


def test_slug():
    assert slug("Relevance methods (`cft.relevance`)") == "relevance-methods-cftrelevance"
    assert slug("The paper's resolution: 224 px, patch 16, depth 12, batch 8") == (
        "the-papers-resolution-224-px-patch-16-depth-12-batch-8"
    )


def test_blocks_and_skip_comments_are_read(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "text\n\n```python\nx = 1\n```\n\n<!-- skip-test: needs a GPU -->\n```python\nimport cuda\n```\n"
        "<!-- skip-test: -->\n```python\ny\n```\n````md\n```python\nnot a block\n```\n````\n~~~bash\nls\n~~~\n"
    )
    blocks = python_blocks(page)
    assert [(b.line, b.skip) for b in blocks] == [(3, None), (8, "needs a GPU"), (12, "")]
    assert blocks[0].code.splitlines()[3] == "x = 1"  # line 4 of the page, so tracebacks name it
    assert [b.info for b in fenced_blocks(page.read_text())] == ["python", "python", "python", "md", "bash"]
