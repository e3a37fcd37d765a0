"""Content sniffing: decide what a file *is* from its bytes, so a misnamed file is still read correctly."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Literal

ContentKind = Literal["pdf", "docx", "zip", "binary", "html", "text"]

SNIFF_BYTES = 8192

# Leading bytes of common binary formats that are certainly not text; anything else is judged by its bytes.
_BINARY_MAGIC: tuple[bytes, ...] = (
    b"\x89PNG", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*",  # images
    b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",  # OLE2: legacy .doc/.xls/.ppt
    b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"7z\xbc\xaf\x27\x1c", b"Rar!\x1a\x07", b"(\xb5/\xfd",  # archives
    b"\x7fELF", b"MZ", b"\xca\xfe\xba\xbe", b"\xcf\xfa\xed\xfe",  # executables
    b"SQLite format 3\x00", b"OggS", b"fLaC", b"ID3", b"RIFF", b"\x00\x00\x00\x18ftyp", b"\x00\x00\x00\x20ftyp",
)

_TEXT_BOMS: tuple[bytes, ...] = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")

_HTML_START = re.compile(rb"^\s*(<\?xml[^>]*>\s*)?(<!--.*?-->\s*)*<(!doctype\s+html|html[\s>])",
                         re.IGNORECASE | re.DOTALL)


def read_head(path: Path, n: int = SNIFF_BYTES) -> bytes:
    """The first `n` bytes of a file."""
    with path.open("rb") as fh:
        return fh.read(n)


def looks_like_utf16(head: bytes) -> bool:
    """BOM-less UTF-16 of mostly Latin text: every other byte is NUL, consistently on one side."""
    sample = head[:4096]
    if len(sample) < 4:
        return False
    even_nuls = sample[0::2].count(0) / max(1, len(sample[0::2]))
    odd_nuls = sample[1::2].count(0) / max(1, len(sample[1::2]))
    return (odd_nuls > 0.6 and even_nuls < 0.05) or (even_nuls > 0.6 and odd_nuls < 0.05)


def control_char_ratio(text: str) -> float:
    """Share of C0 control characters other than tab/newline/CR/form feed: high in decoded binary."""
    if not text:
        return 0.0
    bad = sum(1 for ch in text if ord(ch) < 32 and ch not in "\t\n\r\f\v")
    return bad / len(text)


def is_binary(head: bytes) -> bool:
    """True when the bytes are not text in any plausible encoding (checked on the first 8 KB)."""
    if head.startswith(_TEXT_BOMS):
        return False
    if head.startswith(_BINARY_MAGIC):
        return True
    if b"\x00" in head:
        # NULs never occur in 8-bit text; UTF-16 without a BOM is the one text form that has them.
        return not looks_like_utf16(head)
    # Decode leniently as Latin-1 (never fails) just to count control characters.
    return control_char_ratio(head.decode("latin-1")) > 0.05


_PDF_HEADER = re.compile(rb"%PDF-\d\.\d")


def _is_pdf(head: bytes) -> bool:
    if head.lstrip().startswith(b"%PDF-"):
        return True
    # Readers accept the header anywhere in the first 1024 bytes (some writers prepend junk), but a note that merely
    # mentions "%PDF-" must stay text: demand an object definition as well.
    return _PDF_HEADER.search(head[:1024]) is not None and re.search(rb"\d+ \d+ obj\b", head) is not None


def _zip_kind(path: Path) -> ContentKind:
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except Exception:  # zipfile raises BadZipFile, NotImplementedError, ValueError... on damaged directories
        return "zip"  # a damaged zip: the DOCX loader, if the name asks for it, reports why
    return "docx" if "word/document.xml" in names else "zip"


def sniff(path: Path, head: bytes | None = None) -> ContentKind:
    """Classify a file by content: pdf, docx, zip (any other zip), binary, html or text."""
    head = read_head(path) if head is None else head
    if _is_pdf(head):
        return "pdf"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return _zip_kind(path)
    if is_binary(head):
        return "binary"
    if _HTML_START.match(head.lstrip(b"\xef\xbb\xbf")):
        return "html"
    return "text"
