"""Markdown: front matter stripped, ATX and setext headings (outside code fences) become heading sections."""

from __future__ import annotations

import re
from pathlib import Path

from core.types import Document, IngestError
from ingest.loaders.text import build_sections, decode_text

_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?\n)?(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.DOTALL)
_FM_TITLE = re.compile(r"^title[ \t]*:[ \t]*(.+?)[ \t]*$", re.MULTILINE)
# CommonMark: up to 3 spaces of indent, 1-6 '#', then a space or end of line ("#tag" is not a heading), optional
# closing run of '#'.
_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
# Lines that cannot be the text of a setext heading (a list item, quote, table row, heading or fence before '---').
_NOT_SETEXT_TEXT = re.compile(r"^ {0,3}(?:[-*+>|#]|\d+[.)]\s|```|~~~)|^\s{4}")


def _front_matter(text: str) -> tuple[str, str | None]:
    """Strip YAML front matter; return (rest of the text, its `title:` value if any)."""
    m = _FRONT_MATTER.match(text)
    if not m:
        return text, None
    title = None
    t = _FM_TITLE.search(m.group(1) or "")
    if t:
        title = t.group(1).strip().strip("'\"").strip() or None
    return text[m.end():], title


def markdown_headings(text: str) -> list[tuple[int, int, str]]:
    """(offset of the heading's first line, level, heading text) for every heading outside fenced code."""
    found: list[tuple[int, int, str]] = []
    fence: tuple[str, int] | None = None  # (fence char, run length) while inside a fenced block
    pos = 0
    prev: tuple[int, str] | None = None  # (offset, line) of the previous line if it could be setext heading text
    last_blank = True
    for line in text.split("\n"):
        start, pos = pos, pos + len(line) + 1
        blank = not line.strip()
        was_blank, last_blank = last_blank, blank
        candidate, prev = prev, None
        fm = _FENCE.match(line)
        if fence is not None:
            # A fence closes with the same character, at least as long, and no info string.
            if fm and fm.group(1)[0] == fence[0] and len(fm.group(1)) >= fence[1] and not fm.group(2).strip():
                fence = None
            continue
        if fm and not (fm.group(1)[0] == "`" and "`" in fm.group(2)):
            fence = (fm.group(1)[0], len(fm.group(1)))
            continue
        atx = _ATX.match(line)
        if atx:
            if (atx.group(2) or "").strip():
                found.append((start, len(atx.group(1)), atx.group(2).strip()))
            continue
        st = _SETEXT.match(line)
        if st and candidate is not None:
            found.append((candidate[0], 1 if st.group(1)[0] == "=" else 2, candidate[1].strip()))
            continue
        # Only a one-line paragraph is taken as setext text: cheap, and it never swallows a multi-line paragraph.
        if not blank and was_blank and not _NOT_SETEXT_TEXT.match(line):
            prev = (start, line)
    return found


def load_markdown(path: Path, data: bytes) -> Document:
    """Load a Markdown file; the text is kept as written (markup included), front matter removed."""
    raw, warnings = decode_text(data, path.suffix.lower())
    text, fm_title = _front_matter(raw)
    if not text.strip():
        raise IngestError("no text (the Markdown file is empty apart from front matter)" if fm_title or raw.strip()
                          else "no text (the file holds only whitespace)")
    headings = markdown_headings(text)
    sections = build_sections(text, headings)
    h1 = next((h[2] for h in headings if h[1] == 1 and h[2]), None)
    title = fm_title or h1 or path.stem
    return Document(path=path, file_type="markdown", title=title, text=text, sections=sections, warnings=warnings)
