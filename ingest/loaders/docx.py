"""DOCX with python-docx: a zip-bomb guard first, then the body in document order as heading sections."""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docx
from docx.oxml.ns import qn
from docx.text.paragraph import Paragraph

from core.types import Document, IngestError
from ingest.loaders.pdf import short_reason
from ingest.loaders.text import build_sections

MB = 1024 * 1024
# A member this big that deflated more than RATIO_LIMIT times is refused even under the total limit: real Word
# parts (XML, images) compress 2-20x, while padding built to exhaust memory compresses up to ~1000x.
BIG_MEMBER_BYTES = 20 * MB
RATIO_LIMIT = 100
MAX_MEMBERS = 10_000

_HEADING_STYLE = re.compile(r"heading\s*([1-9])")
_W_P, _W_TBL, _W_SDT, _W_SDT_CONTENT = qn("w:p"), qn("w:tbl"), qn("w:sdt"), qn("w:sdtContent")
_W_TR, _W_TC, _W_CUSTOM = qn("w:tr"), qn("w:tc"), qn("w:customXml")
_W_OUTLINE, _W_NUMPR, _W_VAL = qn("w:outlineLvl"), qn("w:numPr"), qn("w:val")


def check_zip(path: Path, max_uncompressed_mb: float) -> None:
    """Refuse a DOCX that is not a zip, or that would inflate to more than the limit (reads the central directory
    only; nothing is decompressed). zipfile never inflates past a member's declared size, so a directory that lies
    about sizes cannot sneak more data past this check.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, NotImplementedError, ValueError, EOFError) as exc:
        raise IngestError(f"corrupt DOCX (not a valid zip): {short_reason(exc)}") from exc
    if len(infos) > MAX_MEMBERS:
        raise IngestError(f"DOCX has {len(infos):,} zip entries — refused as a possible zip bomb")
    total = sum(i.file_size for i in infos)
    if total > max_uncompressed_mb * MB:
        raise IngestError(f"DOCX expands to {total / MB:,.0f} MB uncompressed — refused as a possible zip bomb "
                          f"(limit {max_uncompressed_mb:g} MB)")
    for info in infos:
        ratio = info.file_size / max(1, info.compress_size)
        if info.file_size > BIG_MEMBER_BYTES and ratio > RATIO_LIMIT:
            raise IngestError(f"DOCX part '{info.filename}' expands {ratio:,.0f}× ({info.file_size / MB:,.0f} MB "
                              f"from {info.compress_size / MB:,.2f} MB) — refused as a possible zip bomb")
    if not any(i.filename == "word/document.xml" for i in infos):
        raise IngestError("not a Word document: the zip has no word/document.xml")


def _blocks(container: Any) -> Iterator[Any]:
    """Paragraph and table elements of a body in document order, looking inside content controls."""
    for child in container.iterchildren():
        if child.tag in (_W_P, _W_TBL):
            yield child
        elif child.tag == _W_SDT:
            content = child.find(_W_SDT_CONTENT)
            if content is not None:
                yield from _blocks(content)
        elif child.tag == _W_CUSTOM:
            yield from _blocks(child)


def _style_chain(paragraph: Paragraph) -> Iterator[Any]:
    try:
        style = paragraph.style
    except Exception:  # a dangling style id must not stop the document
        return
    seen = 0
    while style is not None and seen < 10:
        yield style
        style, seen = style.base_style, seen + 1


def _heading_level(paragraph: Paragraph) -> int | None:
    """0 for Title, 1-9 for headings (by style name, or by an explicit outline level), None for body text."""
    for style in _style_chain(paragraph):
        name = (style.name or "").strip().lower()
        if name == "title":
            return 0
        m = _HEADING_STYLE.fullmatch(name)
        if m:
            return int(m.group(1))
    # Custom heading styles often only carry an outline level (0-8; 9 means body text).
    elements = [paragraph._p.pPr] + [s.element.pPr for s in _style_chain(paragraph)]
    for ppr in elements:
        if ppr is None:
            continue
        outline = ppr.find(_W_OUTLINE)
        if outline is not None:
            try:
                level = int(outline.get(_W_VAL, "9"))
            except ValueError:
                return None
            return level + 1 if 0 <= level < 9 else None
    return None


_LIST_STYLE = re.compile(r"list (?:bullet|number)(?: \d)?")


def _is_list_item(paragraph: Paragraph) -> bool:
    """Numbered or bulleted: numbering on the paragraph or its style, or a built-in list style."""
    ppr = paragraph._p.pPr
    if ppr is not None and ppr.find(_W_NUMPR) is not None:
        return True
    for style in _style_chain(paragraph):
        if _LIST_STYLE.fullmatch((style.name or "").strip().lower()):
            return True
        sppr = style.element.pPr
        if sppr is not None and sppr.find(_W_NUMPR) is not None:
            return True
    return False


def _table_text(tbl: Any, parent: Any) -> str:
    # Walk the XML directly: python-docx's row.cells repeats merged cells, which would print them twice.
    rows: list[str] = []
    for tr in tbl.iterchildren(_W_TR):
        cells = []
        for tc in tr.iterchildren(_W_TC):
            text = " ".join(" ".join(Paragraph(p, parent).text.split()) for p in tc.iter(_W_P))
            cells.append(text.strip())
        if any(cells):
            rows.append(" | ".join(cells))
    return "\n".join(rows)


def load_docx(path: Path, *, max_uncompressed_mb: float = 300) -> Document:
    """Load a DOCX: paragraphs and tables in document order; one Section per heading block."""
    check_zip(path, max_uncompressed_mb)
    try:
        document = docx.Document(str(path))
    except ValueError as exc:
        # python-docx says this for .docm/.dotx and other Office types that share the container.
        raise IngestError(f"not a Word document: {short_reason(exc)}") from exc
    except Exception as exc:
        raise IngestError(f"corrupt DOCX: {short_reason(exc)}") from exc

    body = document._body
    blocks: list[tuple[str, str, int | None]] = []  # (kind, text, heading level)
    for el in _blocks(document.element.body):
        if el.tag == _W_TBL:
            text = _table_text(el, body)
            if text:
                blocks.append(("table", text, None))
            continue
        paragraph = Paragraph(el, body)
        text = paragraph.text.strip()
        if not text:
            continue
        level = _heading_level(paragraph)
        if level is not None:
            blocks.append(("heading", " ".join(text.split()), level))
        elif _is_list_item(paragraph):
            blocks.append(("list", "- " + text, None))
        else:
            blocks.append(("para", text, None))

    parts: list[str] = []
    headings: list[tuple[int, int, str]] = []
    pos = 0
    prev_kind = ""
    for kind, text, level in blocks:
        if parts:
            # Consecutive list items stay one paragraph so the chunker keeps a list together.
            sep = "\n" if kind == prev_kind == "list" else "\n\n"
            parts.append(sep)
            pos += len(sep)
        if level is not None:
            headings.append((pos, level, text))
        parts.append(text)
        pos += len(text)
        prev_kind = kind
    text = "".join(parts)
    if not text.strip():
        raise IngestError("no text in DOCX")

    title = headings[0][2] if headings else None
    if title is None:
        try:
            title = (document.core_properties.title or "").strip() or None
        except Exception:
            title = None
    return Document(path=path, file_type="docx", title=title or path.stem, text=text,
                    sections=build_sections(text, headings))
