"""PDF with pypdf: one Section per page that has text, light clean-up, readable reasons for every failure."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from pypdf import PasswordType, PdfReader
from pypdf.errors import DependencyError, FileNotDecryptedError

from core.types import Document, IngestError, Section

log = logging.getLogger(__name__)

ENCRYPTED_REASON = "encrypted PDF (password-protected); remove the password and drop it again"
# pypdf decrypts RC4 itself but needs the optional `cryptography` package for AES (PDF 1.6+, Acrobat's default).
AES_REASON = ("encrypted PDF (AES) cannot be opened: the 'cryptography' package is not installed; "
              "install it, or remove the encryption and drop it again")

_LIGATURES = str.maketrans({"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl",
                            "\ufb05": "st", "\ufb06": "st"})
_HSPACE = re.compile(r"[ \t\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000\v\f]+")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_BLANK_RUNS = re.compile(r"\n{3,}")
# A word broken across lines: letter, hyphen (or soft hyphen), newline, letter.
_HYPHEN_BREAK = re.compile(r"([^\W\d_])[-\u00ad]\n([^\W\d_])")
# Titles that PDF producers fill in by themselves and that say nothing about the document.
_JUNK_TITLES = frozenset({"untitled", "title", "document", "document1", "no title", "unknown", "slide 1",
                          "powerpoint presentation", "microsoft word", "pdf", "none", "null", "blank"})
_OFFICE_PREFIX = re.compile(r"^microsoft (?:word|powerpoint|excel)\s*-\s*", re.IGNORECASE)
_FILE_EXT = re.compile(r"\.(?:docx?|pdf|pptx?|xlsx?|rtf|odt|tex|dvi|ps|indd|qxd|txt|html?)$", re.IGNORECASE)


def short_reason(exc: BaseException, limit: int = 160) -> str:
    """A one-line, bounded description of an exception for a user-facing reason."""
    # KeyError's str() wraps the message in quotes; use the bare message.
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    msg = " ".join(text.split()) or type(exc).__name__
    return msg if len(msg) <= limit else msg[: limit - 1] + "…"


def clean_pdf_text(text: str) -> str:
    """Light clean-up of extracted page text: NULs and control characters out, ligatures expanded, whitespace
    normalised per line, runs of blank lines collapsed, and words hyphenated across a line end joined again.
    """
    text = text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n").translate(_LIGATURES)
    text = "\n".join(_HSPACE.sub(" ", line).strip() for line in text.split("\n"))
    text = _CONTROL.sub("", text)
    text = _BLANK_RUNS.sub("\n\n", text)
    # Only join when the continuation starts lower-case: "exam-\nple" is one word, "Anglo-\nSaxon" keeps its hyphen.
    text = _HYPHEN_BREAK.sub(lambda m: m.group(1) + m.group(2) if m.group(2).islower() else m.group(0), text)
    return text.replace("\u00ad", "").strip()


def meaningful_title(raw: object) -> str | None:
    """The metadata title if it names the document, None if empty or boilerplate (a file name, 'Untitled', ...)."""
    if not isinstance(raw, str):
        return None
    title = " ".join(raw.replace("\x00", "").split())
    title = _OFFICE_PREFIX.sub("", title)
    if _FILE_EXT.search(title) or title.lower() in _JUNK_TITLES or title.lower().startswith("untitled"):
        return None
    if len(title) < 3 or not any(ch.isalpha() for ch in title):
        return None
    return title


def _has_eof_marker(path: Path) -> bool:
    # Writers end every PDF with %%EOF; without it the file was cut short (an interrupted download or a copy
    # still in progress), and pypdf would at best recover part of it without saying so.
    size = path.stat().st_size
    with path.open("rb") as fh:
        fh.seek(max(0, size - 65536))
        return b"%%EOF" in fh.read()


def _open(path: Path) -> PdfReader:
    if not _has_eof_marker(path):
        raise IngestError("corrupt or truncated PDF: no %%EOF end marker (incomplete download or copy?)")
    try:
        reader = PdfReader(path)
    except DependencyError as exc:
        raise IngestError(AES_REASON) from exc
    except Exception as exc:  # pypdf raises many types on damaged input; all mean the same to the user
        raise IngestError(f"corrupt or truncated PDF: {short_reason(exc)}") from exc
    if reader.is_encrypted:
        try:
            # Many "protected" PDFs only restrict printing/copying and open with an empty user password.
            result = reader.decrypt("")
        except DependencyError as exc:
            raise IngestError(AES_REASON) from exc
        except Exception as exc:
            raise IngestError(f"corrupt or truncated PDF: encryption data unreadable ({short_reason(exc)})") from exc
        if result == PasswordType.NOT_DECRYPTED:
            raise IngestError(ENCRYPTED_REASON)
    return reader


def load_pdf(path: Path) -> Document:
    """Load a PDF: one Section per page with text (1-based `page`), pages joined by a blank line."""
    reader = _open(path)
    try:
        pages = reader.pages
        n_pages = len(pages)
    except FileNotDecryptedError as exc:
        raise IngestError(ENCRYPTED_REASON) from exc
    except DependencyError as exc:
        raise IngestError(AES_REASON) from exc
    except Exception as exc:
        raise IngestError(f"corrupt or truncated PDF: page tree unreadable ({short_reason(exc)})") from exc

    warnings: list[str] = []
    texts: list[tuple[int, str]] = []
    failed = 0
    last_error = ""
    for i in range(n_pages):
        try:
            raw = pages[i].extract_text() or ""
        except FileNotDecryptedError as exc:
            raise IngestError(ENCRYPTED_REASON) from exc
        except DependencyError as exc:
            raise IngestError(AES_REASON) from exc
        except Exception as exc:  # one broken page must not cost the user the rest of the document
            failed += 1
            last_error = short_reason(exc, 100)
            warnings.append(f"page {i + 1}: text could not be extracted ({last_error}); skipped")
            log.debug("page %d of %s failed", i + 1, path, exc_info=True)
            continue
        text = clean_pdf_text(raw)
        if text:
            texts.append((i + 1, text))

    if not texts:
        if n_pages and failed == n_pages:
            raise IngestError(f"corrupt PDF: text extraction failed on every page ({last_error})")
        noun = "page" if n_pages == 1 else "pages"
        raise IngestError(f"no extractable text — scanned? ({n_pages} {noun}, no text layer)")

    sections: list[Section] = []
    parts: list[str] = []
    pos = 0
    for page_no, text in texts:
        if parts:
            parts.append("\n\n")
            pos += 2
        sections.append(Section(text=text, start=pos, page=page_no))
        parts.append(text)
        pos += len(text)
    empty = n_pages - len(texts) - failed
    if empty and len(texts) < n_pages / 2:
        warnings.append(f"{empty} of {n_pages} pages have no text layer (scanned pages are not OCR'd)")

    try:
        meta_title = meaningful_title(reader.metadata.title if reader.metadata else None)
    except Exception:  # a broken info dictionary is not worth failing the document for
        meta_title = None
    return Document(path=path, file_type="pdf", title=meta_title or path.stem, text="".join(parts),
                    sections=sections, pages=n_pages, warnings=warnings)
