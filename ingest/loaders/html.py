"""HTML with the stdlib parser only: visible text without script/style/nav; h1-h6 become heading sections."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

from core.types import Document, IngestError
from ingest.loaders.text import build_sections, decode_text

# Content that is never reading matter. `head` is not here: its <title> is wanted and the rest has no text nodes.
_SKIP = frozenset({"script", "style", "nav", "noscript", "template", "svg", "math", "iframe", "object", "canvas",
                   "select", "button"})
_BLOCK = frozenset({
    "address", "article", "aside", "blockquote", "body", "caption", "dd", "details", "dialog", "div", "dl", "dt",
    "fieldset", "figcaption", "figure", "footer", "form", "header", "hr", "html", "legend", "li", "main", "ol", "p",
    "pre", "section", "summary", "table", "tbody", "thead", "tfoot", "tr", "ul", "br",
})
_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track",
                   "wbr"})
_HEADING = re.compile(r"h([1-6])")
_WS = re.compile(r"\s+")
_META_CHARSET = re.compile(rb"<meta[^>]+charset\s*=\s*[\"']?\s*([A-Za-z0-9_\-:.]+)", re.IGNORECASE)


class _Extractor(HTMLParser):
    """Collects blocks of visible text; each block is (kind, text) with kind 'h1'..'h6', 'li', 'tr' or 'p'."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[tuple[str, str]] = []
        self.title_parts: list[str] = []
        self._cur: list[str] = []
        self._kind = "p"
        self._skip: list[str] = []
        self._in_title = False
        self._pre = 0
        self._cells = 0
        self._in_cell = False

    def _flush(self) -> None:
        raw = "".join(self._cur)
        text = raw.strip("\n") if self._pre else _WS.sub(" ", raw).strip()
        if text.strip():
            self.blocks.append((self._kind, text))
        self._cur = []
        self._kind = "p"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._skip:
            if tag == self._skip[-1] or (tag in _SKIP and tag not in _VOID):
                self._skip.append(tag)
            return
        if tag in _SKIP or any(name == "hidden" for name, _ in attrs):
            if tag not in _VOID:
                self._skip.append(tag)
            return
        if tag == "title":
            self._in_title = True
            return
        heading = _HEADING.fullmatch(tag)
        if tag in ("td", "th"):
            if self._cells:
                self._cur.append(" | ")
            self._cells += 1
            self._in_cell = True
            if self._kind == "p":
                self._kind = "tr"
        elif self._in_cell and tag not in ("tr", "table", "tbody", "thead", "tfoot"):
            # Paragraphs or headings inside a cell must not break the row apart.
            if heading or tag in _BLOCK:
                self._cur.append(" ")
        elif heading or tag in _BLOCK:
            self._flush()
            self._in_cell = False
            if heading:
                self._kind = tag
            elif tag == "li":
                self._kind = "li"
                self._cur.append("- ")
            elif tag == "tr":
                self._kind = "tr"
                self._cells = 0
            if tag == "pre":
                self._pre += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # <br/> and friends: treat exactly like the start tag, never push them onto the skip stack.
        if tag in _BLOCK and not self._skip and not self._in_cell:
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if self._skip:
            if tag in self._skip:
                # Pop up to the matching open tag, forgiving unclosed children inside a skipped subtree.
                while self._skip and self._skip.pop() != tag:
                    pass
            return
        if tag == "title":
            self._in_title = False
            return
        if tag in ("td", "th"):
            self._in_cell = False
        elif self._in_cell and tag not in ("tr", "table", "tbody", "thead", "tfoot"):
            return
        elif _HEADING.fullmatch(tag) or tag in _BLOCK:
            self._flush()
            self._in_cell = False
            if tag == "pre" and self._pre:
                self._pre -= 1

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if self._in_title:
            self.title_parts.append(data)
            return
        self._cur.append(data)

    def close(self) -> None:
        super().close()
        self._flush()


def load_html(path: Path, data: bytes) -> Document:
    """Load an HTML page: visible text in blocks, one Section per h1-h6 heading, title from <title>."""
    m = _META_CHARSET.search(data[:4096])
    declared = m.group(1).decode("ascii", "replace") if m else None
    raw, warnings = decode_text(data, path.suffix.lower(), declared=declared)
    parser = _Extractor()
    parser.feed(raw)
    parser.close()

    parts: list[str] = []
    headings: list[tuple[int, int, str]] = []
    pos = 0
    prev_kind = ""
    for kind, text in parser.blocks:
        if parts:
            # Rows of a table and items of a list stay together as one paragraph for the chunker.
            sep = "\n" if kind == prev_kind and kind in ("li", "tr") else "\n\n"
            parts.append(sep)
            pos += len(sep)
        if kind.startswith("h"):
            headings.append((pos, int(kind[1]), text))
        parts.append(text)
        pos += len(text)
        prev_kind = kind
    text = "".join(parts)
    if not text.strip():
        raise IngestError("no visible text in the HTML page")
    page_title = _WS.sub(" ", "".join(parser.title_parts)).strip()
    title = page_title or next((h[2] for h in headings if h[1] == 1), None) or path.stem
    sections = build_sections(text, headings)
    return Document(path=path, file_type="html", title=title, text=text, sections=sections, warnings=warnings)
