"""Plain text and reStructuredText: encoding detection, binary refusal, and the section builder other loaders share."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from charset_normalizer import from_bytes

from core.types import Document, IngestError, Section
from ingest.loaders.sniff import SNIFF_BYTES, control_char_ratio, looks_like_utf16

# (byte order mark, codec); UTF-32 first because its little-endian BOM starts with UTF-16's.
_BOMS: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
# charset-normalizer reads the whole buffer; a sample this size decides the codec just as well and stays fast.
_DETECT_SAMPLE = 1 << 20
_CP1252_CHAOS_MARGIN = 0.04


def named(suffix: str) -> str:
    """How a file's name is described in reasons: `named .txt`, or `named without an extension`."""
    return f"named {suffix}" if suffix else "named without an extension"


def binary_error(suffix: str) -> IngestError:
    """The one reason used for every 'this is not text' refusal."""
    return IngestError(f"binary data, not text ({named(suffix)})")


def _detect_codec(data: bytes, suffix: str) -> str:
    results = from_bytes(data[:_DETECT_SAMPLE])
    best = results.best()
    if best is None:
        raise binary_error(suffix)
    if best.encoding == "cp1252":
        return best.encoding
    # charset-normalizer often ranks a Baltic or Central-European code page first for German or French text (the
    # accented letters share byte values). Windows-1252 is by far the commonest legacy encoding of Western notes,
    # so take it whenever it reads the bytes almost as cleanly; Turkish, Polish, Cyrillic or Greek text decoded as
    # 1252 scores clearly worse and keeps its own code page.
    for match in results:
        if (match.encoding == "cp1252" and match.chaos <= best.chaos + _CP1252_CHAOS_MARGIN
                and match.coherence >= best.coherence - 0.05):
            return "cp1252"
    return best.encoding


def decode_text(data: bytes, suffix: str = "", declared: str | None = None) -> tuple[str, list[str]]:
    """Decode bytes to text with newlines normalised to `\\n` and the BOM stripped; returns (text, warnings).

    Tries, in order: a byte order mark, strict UTF-8, the `declared` encoding (e.g. an HTML meta charset), then
    charset-normalizer's best guess. Raises `IngestError` for binary data.
    """
    warnings: list[str] = []
    codec: str | None = None
    for bom, name in _BOMS:
        if data.startswith(bom):
            data, codec = data[len(bom):], name
            break
    head = data[:SNIFF_BYTES]
    if codec is None and b"\x00" in head:
        if not looks_like_utf16(head):
            raise binary_error(suffix)
        codec = _detect_codec(data, suffix)
    if codec is None:
        # Valid UTF-8 with non-ASCII bytes is practically never meant as anything else, whatever a meta tag says
        # (a stale "iso-8859-1" declaration on a UTF-8 page is a classic).
        try:
            data.decode("utf-8")
            codec = "utf-8"
        except UnicodeDecodeError:
            pass
    if codec is None and declared:
        try:
            data.decode(declared)
            codec = declared
        except (LookupError, UnicodeDecodeError):
            pass  # a wrong or unknown declaration is common; fall through to detection
    if codec is None:
        codec = _detect_codec(data, suffix)
    text = data.decode(codec, errors="replace")
    if "\ufffd" in text and codec.replace("_", "-").lower() not in ("utf-8", "utf8"):
        warnings.append(f"some bytes could not be decoded as {codec} and were replaced")
    if control_char_ratio(text[:SNIFF_BYTES]) > 0.05:
        raise binary_error(suffix)
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    # Stray control characters (form feeds survive as paragraph breaks) only confuse tokenizers downstream.
    text = _CONTROL.sub("", text.replace("\f", "\n\n"))
    return text, warnings


def build_sections(text: str, headings: Iterable[tuple[int, int, str]]) -> list[Section]:
    """Cut `text` into one Section per heading block, plus one for any text before the first heading.

    `headings` are (offset where the heading line starts, level, heading text) in document order; a lower level is
    a higher rank (0 = title, 1 = h1 ...). Each section runs from its heading to the next one, whitespace trimmed,
    and carries the path of enclosing heading texts. Sections that are only whitespace are dropped.
    """
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    marks = sorted(headings, key=lambda h: h[0])
    bounds = [0] + [m[0] for m in marks] + [len(text)]
    paths: list[tuple[str, ...]] = [()]
    for _, level, title in marks:
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, title))
        paths.append(tuple(t for _, t in stack))
    for i, path in enumerate(paths):
        lo, hi = bounds[i], bounds[i + 1]
        chunk = text[lo:hi]
        stripped = chunk.strip()
        if not stripped:
            continue
        start = lo + (len(chunk) - len(chunk.lstrip()))
        sections.append(Section(text=stripped, start=start, heading_path=path))
    return sections


# An RST adornment line: one punctuation character repeated (the docutils set), nothing else.
_ADORNMENT = re.compile(r"^([=\-~^\"'`#*+:._<>!$%&(),/;?@\[\\\]{|}])\1+[ \t]*$")


def rst_headings(text: str) -> list[tuple[int, int, str]]:
    """Find reStructuredText section titles: a title line underlined (optionally also overlined) by one repeated
    punctuation character at least as long as the title. Levels follow the order styles first appear, as in docutils.
    """
    lines = text.split("\n")
    offsets: list[int] = []
    pos = 0
    for line in lines:
        offsets.append(pos)
        pos += len(line) + 1
    styles: list[tuple[str, bool]] = []
    found: list[tuple[int, int, str]] = []
    i = 0
    while i < len(lines) - 1:
        title, under = lines[i], lines[i + 1]
        m = _ADORNMENT.match(under)
        over = i > 0 and m is not None and lines[i - 1].rstrip() == under.rstrip()
        # Only overlined titles may be indented; an indented line followed by dashes is a block quote or a table.
        title_ok = bool(title.strip()) and (over or not title[0].isspace()) and not _ADORNMENT.match(title)
        if m and title_ok and len(under.rstrip()) >= len(title.rstrip()):
            start_line = i - 1 if over else i
            if start_line == 0 or not lines[start_line - 1].strip() or over:
                style = (m.group(1), over)
                if style not in styles:
                    styles.append(style)
                found.append((offsets[start_line], styles.index(style) + 1, title.strip()))
                i += 2
                continue
        i += 1
    return found


def load_text(path: Path, data: bytes, *, rst: bool = False) -> Document:
    """Load a plain-text file as one Section, or a `.rst` file as one Section per title."""
    text, warnings = decode_text(data, path.suffix.lower())
    if not text.strip():
        raise IngestError("no text (the file holds only whitespace)")
    headings = rst_headings(text) if rst else []
    sections = build_sections(text, headings)
    title = headings[0][2] if headings else path.stem
    return Document(path=path, file_type="text", title=title, text=text, sections=sections, warnings=warnings)
